"""Request and response bodies of the HTTP API (published in its OpenAPI document by FastAPI).

Sampling overrides are the fields of :class:`arfm.config.SampleConfig` itself, each optional and with the same
bounds (the model is derived from it, so the two cannot drift apart); a request's overrides are then merged
with the model's defaults and validated by ``SampleConfig``. Floats must be finite everywhere: a JSON ``NaN``
or ``Infinity`` is refused with the field's name.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from arfm.config import SampleConfig

MAX_PROMPT_CHARS = 2000  # the text encoders keep at most a few hundred tokens
MAX_EVENTS = 4096


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _after(end: float, info: ValidationInfo) -> float:
    start = info.data.get("start")
    if start is not None and end <= start:
        raise ValueError(f"end ({end:g} s) must come after start ({start:g} s)")
    return end


def _overrides_of(model: type[BaseModel], exclude: set[str]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        info = copy.copy(info)
        info.default, info.default_factory = None, None
        fields[name] = (Optional[info.annotation], info)
    return create_model("SampleOverrides", __base__=_Body, __doc__="Sampling parameters to change for this "
                        "request; the others are the model's defaults (`GET /v1/models`).", **fields)


# `seconds` is a field of the request itself
SampleOverrides = _overrides_of(SampleConfig, exclude={"seconds"})


class ChordChange(_Body):
    symbol: str = Field(min_length=1, max_length=16, description="chord of the 193-class vocabulary: C, Am, F#7, "
                        "Bbmaj7, Ebm7b5, G/B ... or N (no chord)", examples=["Am"])
    time: float = Field(ge=0, le=600, description="seconds from the start; the chord holds until the next change")


class MelodyNote(_Body):
    pitch: int = Field(ge=0, le=127, description="MIDI note number (the model's range is 43..95, G2..B6)")
    start: float = Field(ge=0, le=600, description="seconds")
    end: float = Field(gt=0, le=600, description="seconds")

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: float, info: ValidationInfo) -> float:
        return _after(end, info)


class DrumsReference(_Body):
    audio_base64: str = Field(min_length=1, description="a WAV/FLAC/OGG clip, base64: its drum track conditions the "
                              "generation (appendix C)")


class Controls(_Body):
    chords: Optional[list[ChordChange]] = Field(None, max_length=MAX_EVENTS)
    melody: Optional[list[MelodyNote]] = Field(None, max_length=MAX_EVENTS)
    drums: Optional[DrumsReference] = None


class GenerateRequest(_Body):
    """``POST /v1/generate``."""

    model: Optional[str] = Field(None, max_length=64, description="a name from GET /v1/models; may be left out "
                                 "when one model is served")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, examples=["calm lofi piano, 80 bpm"])
    seconds: Optional[float] = Field(None, gt=0, le=600, description="length; default: the model's training "
                                     "segment; at most the model's max_seconds")
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1, description="same seed, same request: same audio, "
                                "whatever else shares its batch; default: a random seed (returned)")
    sample: Optional[SampleOverrides] = None  # type: ignore[valid-type]
    controls: Optional[Controls] = None
    format: Literal["wav", "json"] = Field("wav", description="wav: audio/wav bytes; json: base64 WAV with the "
                                           "generation info")

    @field_validator("prompt")
    @classmethod
    def _has_text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the prompt must contain some text, not only spaces")
        return v


class InpaintForm(_Body):
    """``POST /v1/inpaint`` form fields (the reference clip is the ``audio`` file field)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)  # the form also carries the `audio` file

    model: Optional[str] = Field(None, max_length=64)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    start: float = Field(ge=0, le=600, description="seconds: start of the span to regenerate")
    end: float = Field(gt=0, le=600, description="seconds: end of the span (exclusive), inside the clip")
    mode: Optional[Literal["fim", "supervised", "zero_shot"]] = Field(
        None, description="AR: fim; FM: supervised (models trained for it) or zero_shot; default: the model's own")
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1)
    sample: Optional[str] = Field(None, max_length=4096, description="JSON object of sampling overrides")
    format: Literal["wav", "json"] = "wav"

    _has_text = field_validator("prompt")(GenerateRequest._has_text.__func__)
    _after_start = field_validator("end")(MelodyNote._after_start.__func__)


class GenerateResult(BaseModel):
    """The JSON form of a generation (``format=json``)."""

    model: str
    paradigm: Literal["ar", "fm"]
    sample_rate: int
    seconds: float
    seed: int
    batch: int = Field(description="requests generated together with this one")
    info: dict[str, Any] = Field(description="sampling settings, frames, NFE, latency ...")
    audio_wav_base64: str


class ModelInfo(BaseModel):
    name: str
    paradigm: Literal["ar", "fm"]
    frame_rate: float
    sample_rate: int
    max_seconds: float
    sample: dict[str, Any] = Field(description="the default sampling configuration of every request")
    controls: list[str]
    inpainting: list[str] = Field(description="inpainting modes the model supports")
    untrained: bool


class Health(BaseModel):
    status: Literal["ok"]
    models: list[str]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: list[ErrorItem] | str
