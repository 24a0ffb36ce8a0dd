"""From what a client sends to what :class:`~arfm.generate.Generator` takes, and audio back to WAV bytes.

* Reference audio (an inpainting upload, a drum reference) is decoded with ``soundfile`` (WAV, FLAC, OGG),
  mixed to mono and resampled to the model's rate.
* Temporal controls arrive in musical terms and become one index per latent frame (appendix C): chords as
  ``(symbol, time)`` changes, each held until the next, in the model's 193-chord vocabulary (a symbol outside
  it is refused, never guessed); melody as MIDI notes with start and end times in the 53-note range; drums from
  a reference clip through the codec, as in training (:func:`arfm.controls.drums_from_latent`).

Every refusal is a :class:`FieldError` naming the request field, which the API answers with a 422.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

from arfm.vocab import MELODY_LOW_MIDI, N_MELODY_NOTES, chord_index


class FieldError(ValueError):
    """A request value the server cannot use; ``field`` is its dotted name in the request."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field, self.message = field, message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


# ------------------------------------------------------------------------------------------------- audio
def decode_audio(data: bytes, sample_rate: int, field: str, max_seconds: float | None = None) -> np.ndarray:
    """Audio file bytes -> mono float32 at ``sample_rate``; a FieldError if it does not decode or is too long."""
    import soundfile as sf

    if not data:
        raise FieldError(field, "the file is empty")
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises LibsndfileError, RuntimeError, TypeError ...
        raise FieldError(field, f"not a readable audio file (WAV, FLAC or OGG): {exc}") from None
    if audio.shape[0] == 0:
        raise FieldError(field, "the audio holds no samples")
    if max_seconds is not None and audio.shape[0] / rate > max_seconds + 1e-6:
        raise FieldError(field, f"{audio.shape[0] / rate:.2f} s of audio is longer than this model's limit of "
                         f"{max_seconds:g} s")
    mono = audio.mean(axis=1)
    if not np.isfinite(mono).all():
        raise FieldError(field, "the audio holds NaN or infinite samples")
    if rate != sample_rate:
        import torch
        import torchaudio.functional as AF

        mono = AF.resample(torch.from_numpy(mono), int(rate), int(sample_rate)).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def decode_base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError(field, "not valid base64") from None


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio -> 16-bit PCM WAV bytes."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), int(sample_rate), format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------- controls
def chord_symbol_index(symbol: str) -> int:
    """A chord symbol of the vocabulary (``C``, ``F#m7``, ``Bbmaj7``, ``Ebm7b5``, ``G/B``, ``N``) -> its index.

    Strict (:func:`arfm.vocab.chord_index`): the symbol must be one of Chordino's 193 labels (another spelling of
    the same root or bass is accepted, ``Dbmaj7``); anything else is refused with the vocabulary in the message.
    """
    return chord_index(symbol)


def chords_to_frames(events: list[dict[str, Any]], frame_rate: float, n_frames: int) -> list[int]:
    """``[{"symbol", "time"}, ...]`` (each chord holds until the next change) -> chord index per frame."""
    from arfm.vocab import segments_to_frames

    seconds = n_frames / frame_rate
    segments, last = [], -1.0
    for i, ev in enumerate(events):
        where = f"controls.chords[{i}]"
        try:
            chord_symbol_index(ev["symbol"])
        except ValueError as exc:
            raise FieldError(f"{where}.symbol", str(exc)) from None
        t = float(ev["time"])
        if t < last:
            raise FieldError(f"{where}.time", f"{t:g} s comes before the previous change at {last:g} s")
        if t >= seconds:
            raise FieldError(f"{where}.time", f"{t:g} s is past the end of the {seconds:g} s clip")
        last = t
        end = float(events[i + 1]["time"]) if i + 1 < len(events) else seconds
        segments.append((ev["symbol"].split("/")[0], t, end))
    return segments_to_frames(segments, frame_rate, n_frames).tolist()


def melody_to_frames(notes: list[dict[str, Any]], frame_rate: float, n_frames: int) -> list[int]:
    """``[{"pitch", "start", "end"}, ...]`` MIDI notes -> melody class per frame (53: no note)."""
    from arfm.controls import notes_to_frames

    seconds = n_frames / frame_rate
    top = MELODY_LOW_MIDI + N_MELODY_NOTES - 1
    for i, note in enumerate(notes):
        if not MELODY_LOW_MIDI <= note["pitch"] <= top:
            raise FieldError(f"controls.melody[{i}].pitch", f"MIDI {note['pitch']} is outside the melody range "
                             f"{MELODY_LOW_MIDI}..{top} (G2..B6)")
        if note["start"] >= seconds:
            raise FieldError(f"controls.melody[{i}].start", f"{note['start']:g} s is past the end of the "
                             f"{seconds:g} s clip")
    events = [[n["pitch"], n["start"], n["end"]] for n in notes]
    return notes_to_frames(events, frame_rate, n_frames).tolist()


def drums_from_audio(gen: Any, audio: np.ndarray, n_frames: int) -> list[int]:
    """Drum control of a reference clip (appendix C): first-codebook tokens of its blurred latent."""
    import torch

    from arfm.controls import drums_from_latent

    x = torch.from_numpy(audio)[None, None].to(gen.device)
    latent = gen.codec.encode_latent(x)[:, :n_frames]  # cut before the blur, as the evaluation job does
    return drums_from_latent(gen.codec, latent)[0].tolist()
