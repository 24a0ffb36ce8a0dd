"""Loading a served model: a :class:`~arfm.generate.Generator` from a :class:`ModelSpec`, once per replica.

A ``random_init`` spec builds an untrained model of its job preset (codec, text encoder and network, seeded so
that every replica builds the same weights), saves it in the saved-model format and loads it back through
:meth:`Generator.load`: an untrained model is served by the very same path as a trained one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from arfm.config import SampleConfig, resolve
from arfm.generate import Generator
from arfm.serving.config import ModelSpec


def random_model_dir(paradigm: str, out_dir: str | Path, preset: str = "tiny", overrides: list[str] = (),
                     seed: int = 0) -> Path:
    """Save an untrained ``paradigm`` model of ``preset`` (and its untrained codec) under ``out_dir``."""
    from arfm.latents import Codec
    from arfm.modeling import build_generative, save_model_dir
    from arfm.text import build_text_encoder

    out = Path(out_dir)
    cfg = resolve(preset, overrides=[f"model.paradigm={paradigm}", *overrides])
    codec = Codec.from_config(cfg.codec, cfg.data.sample_rate, seed=seed)
    codec.set_normalization(0.0, 1.0)
    codec.save(out / "codec")
    text = build_text_encoder(cfg.text)
    meta = {"codec": codec.identity, "codec_path": str(out / "codec"), "frame_rate": codec.frame_rate,
            "n_codebooks": codec.n_codebooks, "codebook_size": codec.codebook_size, "latent_dim": codec.latent_dim,
            "text_encoder": text.identity, "text_dim": text.dim, "controls": ["chords", "melody", "drums"],
            "untrained": True}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_generative(cfg, meta)
    return save_model_dir(cfg, meta, model, out / "model")


class LoadedModel:
    """A served model: its generator, its default sampling, its length limit and its public description."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._tmp: tempfile.TemporaryDirectory | None = None
        if spec.random_init:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"arfm-serve-{spec.name}-")
            source: str | Path = random_model_dir(spec.random_init, self._tmp.name, spec.preset, spec.set, spec.seed)
        else:
            source = spec.source
        device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.gen = Generator.load(source, device=device, tracking_uri=spec.tracking_uri)
        if spec.precision == "bf16":
            self.gen.model.to(torch.bfloat16)
        if self.gen.paradigm == "ar":
            self.gen.model.set_decoding(spec.decoding)
        elif spec.decoding != "eager":
            raise ValueError(f"model {spec.name!r}: decoding={spec.decoding} applies to AR models only")
        # the model's own sampling configuration, then the spec's overrides: the default of every request
        self.sample = SampleConfig.model_validate({**self.gen.cfg.sample.model_dump(), **spec.sample})
        self.max_seconds = float(spec.max_seconds or self.gen.cfg.data.segment_seconds)

    def info(self) -> dict[str, Any]:
        cfg = self.gen.cfg
        return {
            "name": self.spec.name,
            "paradigm": self.gen.paradigm,
            "frame_rate": self.gen.frame_rate,
            "sample_rate": self.gen.sample_rate,
            "max_seconds": self.max_seconds,
            "sample": self.sample.model_dump(mode="json", exclude={"seconds"}),  # length: `seconds`
            "controls": list(cfg.model.controls),
            "inpainting": _inpaint_modes(self.gen.paradigm, cfg.model.inpainting),
            "untrained": bool(self.gen.meta.get("untrained", False)),
        }


def _inpaint_modes(paradigm: str, trained_with: str) -> list[str]:
    if paradigm == "ar":
        return ["fim"] if trained_with == "fim" else []
    return ["supervised", "zero_shot"] if trained_with == "supervised" else ["zero_shot"]
