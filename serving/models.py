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

from arfm import tracking
from arfm.config import SampleConfig, resolve
from arfm.generate import Generator
from arfm.serving.config import ModelSpec


def random_model_dir(paradigm: str, out_dir: str | Path, preset: str = "tiny", overrides: list[str] = (),
                     seed: int = 0) -> Path:
    """Save an untrained ``paradigm`` model of ``preset`` (and its untrained codec) under ``out_dir``, with every
    control vocabulary."""
    from arfm.modeling import save_untrained_model

    cfg = resolve(preset, overrides=[f"model.paradigm={paradigm}", *overrides])
    return save_untrained_model(cfg, out_dir, controls=["chords", "melody", "drums"], seed=seed)[0]


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
        # the model's own sampling configuration, then the sampling a search attached to it (arfm tune), then the
        # spec's overrides: the default of every request
        tuned = None if spec.random_init else tracking.tuned_sampling_for(source, spec.tracking_uri)
        self.sample_from = f"tuned: {tuned['from']}" if tuned else "the model's own sample settings"
        self.sample = SampleConfig.model_validate({**self.gen.cfg.sample.model_dump(),
                                                   **(tuned["sample"] if tuned else {}), **spec.sample})
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
            "sample_from": self.sample_from,
            "controls": list(cfg.model.controls),
            "inpainting": _inpaint_modes(self.gen.paradigm, cfg.model.inpainting),
            "untrained": bool(self.gen.meta.get("untrained", False)),
        }


def _inpaint_modes(paradigm: str, trained_with: str) -> list[str]:
    if paradigm == "ar":
        return ["fim"] if trained_with == "fim" else []
    return ["supervised", "zero_shot"] if trained_with == "supervised" else ["zero_shot"]
