"""Pure-PyTorch generative models of the study: one backbone, two paradigms (sections 3, 4.2, 4.5).

* :class:`ARModel` - causal transformer over RVQ tokens with the delay pattern (eq. 1), KV-cached
  decoding, CFG (single and multi-source), fill-in-the-middle inpainting.
* :class:`FMModel` - full-attention transformer with U-Net skips regressing the OT vector field
  (eqs. 2-4), ODE sampling (Euler, midpoint, Heun, dopri5), supervised and zero-shot inpainting.
* :func:`build_model` - from plain keyword arguments (the platform's ``ModelConfig`` fields).
"""

from .ar import ARModel
from .build import SIZES, ARConfig, BackboneConfig, FMConfig, build_from_config, build_model, config_dict, \
    count_parameters, make_config
from .cfg import Guidance, cfg_combine, jasco_combine, nested_combine, nested_to_jasco
from .fm import FMModel
from .paths import SigmaMinOTScheduler, conditional_velocity, ot_path
from .solvers import integrate, time_grid
from .transformer import KVCache, Transformer

__all__ = [
    "ARConfig", "ARModel", "BackboneConfig", "FMConfig", "FMModel", "Guidance", "KVCache", "SIZES",
    "SigmaMinOTScheduler", "Transformer", "build_from_config", "build_model", "cfg_combine", "conditional_velocity",
    "config_dict", "count_parameters", "integrate", "jasco_combine", "make_config", "nested_combine", "nested_to_jasco",
    "ot_path", "time_grid",
]
