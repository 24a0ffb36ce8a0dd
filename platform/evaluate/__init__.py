"""Evaluation: one module per metric, the evaluation job and the study report (section 4.3, appendices B, C, I).

Metrics (each returns :class:`arfm.evaluate.results.MetricResult`; heavy libraries are imported on use):
``fad`` (fadtk; offline ``mel-offline`` embedding), ``clap`` (LAION-CLAP), ``aesthetics`` (Audiobox PQ/PC/CE),
``chords`` (chord IOU; Chordino or a chroma-template fallback), ``beats`` (down-beat F1; madmom or an
onset fallback), ``melody`` (MusicGen chroma cosine), ``entropy`` (AR per-step entropy), ``reconstruction``
(SI-SNR, log-MSD). ``estimators`` says whether Chordino / madmom import and why not; ``per_sample`` defines
``eval/per_sample.json``; ``stats`` the intervals (scipy.stats); ``runs``, ``report`` and ``plots`` build the
report from MLflow.
"""
