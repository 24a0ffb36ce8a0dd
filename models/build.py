"""Model configs and the builder the platform maps its ``ModelConfig`` onto.

``build_model(paradigm, **kwargs)`` accepts the fields of ``arfm.config.ModelConfig`` as they are
(``layers, dim, heads, ffn, dropout, unet_skips, controls, text_dropout, control_dropout,
inpainting, sigma_min``, and ``paradigm`` itself), with ``controls`` given as ``{name: vocab size
without the null}``, plus the data dimensions ``text_dim`` and ``n_codebooks, codebook_size`` (AR)
or ``latent_dim`` (FM); the dimensions of the other paradigm are accepted and ignored, so the same
keyword set builds either model. Sizes: ``SIZES['tiny'|'small'|'paper']`` (paper: 24 layers, width
1024, 16 heads, FFN 4096, about 400M parameters).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"layers": 2, "dim": 64, "heads": 4, "ffn": 128},
    "small": {"layers": 8, "dim": 512, "heads": 8, "ffn": 2048},
    "paper": {"layers": 24, "dim": 1024, "heads": 16, "ffn": 4096},
}


@dataclass
class BackboneConfig:
    layers: int = 24
    dim: int = 1024
    heads: int = 16
    ffn: int = 4096
    dropout: float = 0.0
    unet_skips: bool | None = None  # None: on for FM, off for AR (section 4.2)
    text_dim: int = 768
    controls: dict[str, int] = field(default_factory=dict)  # {name: vocab size without the null}
    control_dim: int | None = None  # per-control embedding width; None: dim // 4
    text_dropout: float = 0.1
    control_dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not isinstance(self.controls, dict):
            raise TypeError("controls must be a dict {name: vocab size without the null token}, "
                            f"got {type(self.controls).__name__}")
        self.controls = {str(k): int(v) for k, v in self.controls.items()}

    @property
    def control_width(self) -> int:
        return self.control_dim or max(1, self.dim // 4)


@dataclass
class ARConfig(BackboneConfig):
    n_codebooks: int = 4
    codebook_size: int = 2048
    pattern: str = "delay"
    fim: bool = False  # train on the fill-in-the-middle layout (appendix J)
    span_frac: float = 0.5  # FIM span: 5 s of 10 s
    margin_frac: float = 0.1  # at least 1 s of context on both sides

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.unet_skips is None:
            self.unet_skips = False


@dataclass
class FMConfig(BackboneConfig):
    latent_dim: int = 128
    sigma_min: float = 1e-5
    supervised_inpainting: bool = False  # algorithm 2: mask + known latent as conditioning
    span_frac: float = 0.5
    margin_frac: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.unet_skips is None:
            self.unet_skips = True


_IGNORED = {"ar": {"latent_dim", "sigma_min"}, "fm": {"n_codebooks", "codebook_size", "pattern"}}


def make_config(paradigm: str | None = None, /, **kwargs: Any) -> ARConfig | FMConfig:
    """Plain kwargs (``ModelConfig`` fields, data dims, optional ``preset``) -> :class:`ARConfig` | :class:`FMConfig`."""
    given = kwargs.pop("paradigm", None)
    if paradigm is not None and given is not None and given != paradigm:
        raise ValueError(f"paradigm given twice: {paradigm!r} and {given!r}")
    paradigm = paradigm or given
    if paradigm not in ("ar", "fm"):
        raise ValueError(f"paradigm must be 'ar' or 'fm', got {paradigm!r}")
    preset = kwargs.pop("preset", None)
    if preset and preset not in SIZES:
        raise ValueError(f"unknown size preset {preset!r}; choose one of {', '.join(SIZES)}")
    values: dict[str, Any] = dict(SIZES[preset]) if preset else {}
    inpainting = kwargs.pop("inpainting", "none")
    if inpainting not in ("none", "fim", "supervised"):
        raise ValueError(f"inpainting must be none|fim|supervised, got {inpainting!r}")
    if inpainting == "fim":
        if paradigm != "ar":
            raise ValueError("inpainting='fim' is the AR method; use 'supervised' for fm")
        values["fim"] = True
    if inpainting == "supervised":
        if paradigm != "fm":
            raise ValueError("inpainting='supervised' is the FM method; use 'fim' for ar")
        values["supervised_inpainting"] = True
    cls = ARConfig if paradigm == "ar" else FMConfig
    names = {f.name for f in dataclasses.fields(cls)}
    for k, v in kwargs.items():
        if k in _IGNORED[paradigm]:
            continue
        if k not in names:
            raise TypeError(f"build_model({paradigm!r}): unknown argument {k!r}; known: {', '.join(sorted(names))}")
        values[k] = v
    if values.get("controls") is None:
        values["controls"] = {}
    return cls(**values)


def build_model(paradigm: str | None = None, /, **kwargs: Any):
    """Build an :class:`ARModel` or :class:`FMModel` from plain keyword arguments (see module doc).

    Example::

        build_model("fm", preset="tiny", text_dim=384, latent_dim=32, controls={"chords": 193})
    """
    cfg = make_config(paradigm, **kwargs)
    return build_from_config(cfg)


def build_from_config(cfg: ARConfig | FMConfig):
    from .ar import ARModel
    from .fm import FMModel

    return ARModel(cfg) if isinstance(cfg, ARConfig) else FMModel(cfg)


def config_dict(cfg: ARConfig | FMConfig) -> dict[str, Any]:
    """JSON-able dict with ``paradigm`` that :func:`make_config` turns back into the same config."""
    d = dataclasses.asdict(cfg)
    d["paradigm"] = "ar" if isinstance(cfg, ARConfig) else "fm"
    return d


def count_parameters(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
