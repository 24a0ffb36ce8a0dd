"""Sampling searches (appendix D) with Ray Tune over the one generation API and the evaluation's metrics.

``space`` (search spaces as data, the paper's presets), ``trial`` (the function trainable), ``runs`` (MLflow
parent and child runs), ``search`` (the Tuner, resume, the best configuration attached to the model),
``record`` (trial rows and the best). Nothing heavy is imported here.
"""
