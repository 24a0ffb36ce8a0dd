"""Temporally aligned controls (appendix C): chords, melody and drums as one integer per latent frame.

Sources, in the order the preprocessing uses them:

* **Ground truth** (synthetic data): :func:`controls_from_labels` turns the manifest's chord segments and melody
  note events into per-frame classes. A frame ``i`` covers ``[i/fr, (i+1)/fr)`` and takes the event active at its
  centre (chords: ``arfm.vocab.segments_to_frames``; melody: ``arfm.vocab.melody_index``, 53 = no note).
* **Drums** (every clip): :func:`drums_from_latent` follows JASCO / appendix C: average every 5 consecutive
  pre-quantizer latent frames, broadcast the mean back to the 5 frames, quantize with the codec and keep the
  first codebook (the RVQ's first stage does not depend on the later ones).
* **User audio without labels**: :func:`chords_from_audio` and :func:`melody_from_audio`.

Chord estimators (``method`` is named in every result):

``chordino``
    The paper's estimator: Chordino (NNLS chroma + chord HMM, vamp plugin shipped by ``chord-extractor``), with
    chord-extractor's default parameters. The vocabulary is Chordino's own dictionary (``arfm.vocab``: 193
    classes, one per label Chordino can print), so each of its labels maps to one class.
``chroma-template`` (fallback when ``chord-extractor``/``vamp`` is not installed)
    A light numpy/scipy estimator: log-magnitude STFT folded into a 12-bin chroma (60 Hz-2.1 kHz), cosine match
    against the binary templates of ``arfm.vocab.chord_templates`` with a small preference for triads and for
    root position over the slash chords it cannot tell apart, a ~0.5 s
    moving average of the scores, silence -> ``N``, segments shorter than 0.25 s merged away. It differs from
    Chordino in having no NNLS approximate transcription (so harmonics leak into the chroma: sevenths and sixths
    are confused with triads more often), no tuning estimation, no bass chroma (inversions are not seen) and no
    HMM/Viterbi smoothing (switch times are noisier). Good on clean synthetic triads, weaker on dense mixes.

Melody estimators (the paper uses deep salience: a CNN multi-F0 salience over 53 notes at ~86 frames/s; the
salience is linearly interpolated to the latent frame rate, values under 0.5 are zeroed and each frame takes
the argmax note, or 53 when nothing is left):

``basic-pitch``
    The ICASSP 2022 Basic Pitch model (ONNX, ``basic-pitch`` package): its 264-bin contour salience (3 bins per
    semitone from A0, ~86 frames/s) is max-pooled to semitones and cut to the 53-note range, then treated exactly
    as above. Like deep salience it is a learned multi-F0 salience; unlike deep salience it is trained for
    polyphonic transcription of instruments (not vocal-melody-tuned) and its scale is a note-contour posterior,
    so the 0.5 threshold keeps somewhat fewer frames.
``harmonic-sum`` (fallback when ``basic-pitch``/``onnxruntime`` is not installed)
    A hand-written salience: STFT magnitudes summed over 8 harmonics with weights 0.8^(h-1) for every note of the
    53-note range, normalized by the clip's maximum, then the same interpolation/threshold/argmax. No learning:
    loud accompaniment can win over the melody, octave errors are more frequent, and the normalization per clip
    means quiet passages are dropped.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from arfm.vocab import (
    MELODY_LOW_MIDI,
    MELODY_NONE,
    N_CHORDS,
    N_MELODY_NOTES,
    NO_CHORD,
    chord_from_index,
    chord_templates,
    melody_index,
    slash_chords,
    segments_to_frames,
)

CONTROL_VOCAB = {"chords": N_CHORDS, "melody": N_MELODY_NOTES + 1}  # drums: codec.codebook_size, see control_vocab
BLUR_FRAMES = 5
MELODY_THRESHOLD = 0.5

CHORD_INSTALL = "pip install numpy && pip install --no-build-isolation vamp==1.1.0 && pip install chord-extractor==0.1.3"
MELODY_INSTALL = ("pip install onnxruntime librosa mir_eval pretty_midi 'resampy<0.4.3' scikit-learn && "
                  "pip install --no-deps basic-pitch==0.4.0")


def control_vocab(codebook_size: int) -> dict[str, int]:
    """Vocabulary size of each control, without the null token (the model adds it at index == size)."""
    return {**CONTROL_VOCAB, "drums": int(codebook_size)}


# --------------------------------------------------------------------------------------------- ground truth


def notes_to_frames(notes, frame_rate: float, n_frames: int, offset: float = 0.0) -> np.ndarray:
    """Melody note events ``[[midi, start_s, end_s], ...]`` -> class per frame (53 where no note sounds)."""
    out = np.full(n_frames, MELODY_NONE, dtype=np.int64)
    centres = (np.arange(n_frames) + 0.5) / frame_rate + offset
    for midi, start, end in notes or ():
        out[(centres >= float(start)) & (centres < float(end))] = melody_index(midi)
    return out


def controls_from_labels(labels: dict[str, Any], frame_rate: float, n_frames: int,
                         offset: float = 0.0) -> dict[str, np.ndarray]:
    """Ground-truth ``{"chords": int64[T], "melody": int64[T]}`` from a manifest ``labels`` dict.

    ``offset`` (seconds) is where the segment starts inside the clip the labels describe.
    """
    if labels is None:
        raise ValueError("controls_from_labels: this row has no labels; use chords_from_audio/melody_from_audio")
    chords = [(str(lab), float(s) - offset, float(e) - offset) for lab, s, e in labels.get("chords") or ()]
    return {
        "chords": segments_to_frames(chords, frame_rate, n_frames),
        "melody": notes_to_frames(labels.get("melody"), frame_rate, n_frames, offset),
    }


# --------------------------------------------------------------------------------------------- drums


def blur_latent(latent, block: int = BLUR_FRAMES):
    """Average every ``block`` consecutive frames of ``latent[B, T, D]`` and broadcast back (last block partial)."""
    import torch

    b, t, d = latent.shape
    ids = torch.arange(t, device=latent.device) // block
    nb = int(ids[-1]) + 1 if t else 0
    sums = latent.new_zeros(b, nb, d).index_add_(1, ids, latent)
    counts = torch.bincount(ids, minlength=nb).to(latent.dtype).clamp_min(1)
    return (sums / counts[None, :, None])[:, ids]


def drums_from_latent(codec, latent) -> "torch.Tensor":  # noqa: F821
    """Drum control of appendix C: ``latent[B, T, D]`` (un-normalized) -> first-codebook tokens ``int64[B, T]``."""
    import torch

    with torch.no_grad():
        codes = codec.quantize(blur_latent(latent))
    return codes[:, 0].long()


# --------------------------------------------------------------------------------------------- helpers


def _mono(audio) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim > 1:
        x = x.reshape(-1, x.shape[-1]).mean(0) if x.shape[-1] > x.shape[0] else x.mean(-1)
    return np.ascontiguousarray(x)


def _stft_mag(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Magnitude STFT ``[frames, n_fft//2+1]``, frame ``j`` centred at ``j*hop`` samples."""
    pad = n_fft // 2
    xp = np.pad(x, (pad, pad))
    n = 1 + max(0, (len(xp) - n_fft) // hop)
    frames = np.lib.stride_tricks.as_strided(xp, (n, n_fft), (xp.strides[0] * hop, xp.strides[0]), writeable=False)
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=1)).astype(np.float32)


def segments_from_frames(labels: list[str], fps: float, min_seconds: float = 0.0,
                         centred: bool = False) -> list[tuple[str, float, float]]:
    """Per-frame labels -> merged ``(label, start, end)`` segments.

    Frame ``i`` spans ``[i/fps, (i+1)/fps)``, or ``[(i-0.5)/fps, (i+0.5)/fps)`` with ``centred=True`` (STFT frames
    centred on ``i/fps``). Segments shorter than ``min_seconds`` are absorbed by their neighbour (the previous one,
    or the next one at the start).
    """
    shift = 0.5 / fps if centred else 0.0
    segs: list[list] = []
    for i, lab in enumerate(labels):
        start, end = max(0.0, i / fps - shift), (i + 1) / fps - shift
        if segs and segs[-1][0] == lab:
            segs[-1][2] = end
        else:
            segs.append([lab, start, end])
    merged: list[list] = []
    for s in segs:
        if merged and (s[2] - s[1] < min_seconds or merged[-1][0] == s[0]):
            merged[-1][2] = s[2]
        elif len(merged) == 1 and merged[0][2] - merged[0][1] < min_seconds:
            merged[0] = [s[0], merged[0][1], s[2]]
        else:
            merged.append(s)
    return [(str(a), round(float(b), 4), round(float(c), 4)) for a, b, c in merged]


# --------------------------------------------------------------------------------------------- chords


def chordino_available():
    """True when Chordino imports (``chord_extractor.extractors`` sets VAMP_PATH to the bundled nnls-chroma.so,
    then ``vamp``); otherwise false with the import error as ``.reason`` (the evaluation's own probe)."""
    from arfm.evaluate.estimators import probe

    return probe("Chordino (chord-extractor)", ("chord_extractor.extractors", "vamp"))


def _chordino(x: np.ndarray, sr: int) -> list[tuple[str, float, float]]:
    import vamp
    from chord_extractor.extractors import Chordino

    out = vamp.collect(x, sr, "nnls-chroma:chordino", parameters=Chordino()._params)
    changes = [(str(c["label"]), float(c["timestamp"])) for c in out.get("list", [])]
    end = len(x) / sr
    segs: list[tuple[str, float, float]] = []
    if not changes or changes[0][1] > 0:
        segs.append((NO_CHORD, 0.0, changes[0][1] if changes else end))
    for i, (lab, t) in enumerate(changes):
        t_end = changes[i + 1][1] if i + 1 < len(changes) else end
        if t_end <= t:
            continue
        if segs and segs[-1][0] == lab:
            segs[-1] = (lab, segs[-1][1], t_end)
        else:
            segs.append((lab, t, t_end))
    return segs


def _chroma_template(x: np.ndarray, sr: int, fps: float = 10.0) -> list[tuple[str, float, float]]:
    n_fft = 1 << int(np.ceil(np.log2(sr * 0.186)))  # ~186 ms window: 4096 at 22-32 kHz
    hop = max(1, int(round(sr / fps)))
    mag = _stft_mag(x, n_fft, hop)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    band = (freqs >= 60) & (freqs <= 2100)
    pcs = np.round(69 + 12 * np.log2(freqs[band] / 440.0)).astype(int) % 12
    logmag = np.log1p(100.0 * mag[:, band] / (mag.max() + 1e-9))
    chroma = np.zeros((len(mag), 12), dtype=np.float32)
    for pc in range(12):
        chroma[:, pc] = logmag[:, pcs == pc].sum(1)
    energy = chroma.sum(1)
    chroma /= np.linalg.norm(chroma, axis=1, keepdims=True) + 1e-9
    tmpl = chord_templates()
    size = tmpl.sum(1)
    scores = chroma @ (tmpl / np.linalg.norm(tmpl, axis=1, keepdims=True)).T - 0.02 * (size > 3) - 1e-3 * slash_chords()
    k = max(1, int(round(0.5 * fps)))
    if k > 1 and len(scores) > 1:
        from scipy.ndimage import uniform_filter1d

        scores = uniform_filter1d(scores, size=k, axis=0, mode="nearest")
    best = scores.argmax(1)
    silent = energy < 0.05 * (energy.max() + 1e-9)
    labels = [NO_CHORD if s else chord_from_index(int(b)) for b, s in zip(best, silent)]
    segs = segments_from_frames(labels, fps, min_seconds=0.25, centred=True)
    end = len(x) / sr
    return [(a, b, min(c, end)) for a, b, c in segs if b < end]


def chords_from_audio(audio, sr: int, method: str = "auto") -> dict[str, Any]:
    """Estimate chord segments from audio: ``{"segments": [(label, start_s, end_s)], "method": str}``.

    ``method``: ``auto`` (Chordino when it imports, else the chroma-template fallback, with ``"fallback"``
    saying why), ``chordino`` (error with the import error and the install command when missing) or
    ``chroma-template``.
    """
    x = _mono(audio)
    if method not in ("auto", "chordino", "chroma-template"):
        raise ValueError(f"chord method {method!r}: choose auto, chordino or chroma-template")
    available = chordino_available()
    if method == "chordino" or (method == "auto" and available):
        if not available:
            raise RuntimeError(f"{available}; install it with: {CHORD_INSTALL}")
        return {"segments": _chordino(x, sr), "method": "chordino"}
    out = {"segments": _chroma_template(x, sr), "method": "chroma-template"}
    if method == "auto":
        out["fallback"] = f"chroma-template used because {available}"
    return out


# --------------------------------------------------------------------------------------------- melody


def salience_to_frames(salience: np.ndarray, src_fps: float, frame_rate: float, n_frames: int,
                       threshold: float = MELODY_THRESHOLD) -> np.ndarray:
    """Appendix C: salience ``[N_src, 53]`` at ``src_fps`` -> linear interpolation to the latent frame times,
    values below ``threshold`` zeroed, argmax per frame, 53 where no note is left."""
    sal = np.asarray(salience, dtype=np.float32)
    if sal.ndim != 2 or sal.shape[1] != N_MELODY_NOTES:
        raise ValueError(f"salience must be [frames, {N_MELODY_NOTES}], got {sal.shape}")
    if len(sal) == 0:
        return np.full(n_frames, MELODY_NONE, dtype=np.int64)
    src_t = np.arange(len(sal)) / src_fps
    dst_t = (np.arange(n_frames) + 0.5) / frame_rate
    interp = np.stack([np.interp(dst_t, src_t, sal[:, k]) for k in range(N_MELODY_NOTES)], axis=1)
    interp[interp < threshold] = 0.0
    out = interp.argmax(1).astype(np.int64)
    out[interp.max(1) <= 0] = MELODY_NONE
    return out


def basic_pitch_available() -> bool:
    try:
        import basic_pitch  # noqa: F401
        import onnxruntime  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


@lru_cache(maxsize=1)
def _basic_pitch_model():
    """The ICASSP 2022 model loaded once (basic-pitch >= 0.3 ``Model``: ONNX when only onnxruntime is present)."""
    from basic_pitch import ICASSP_2022_MODEL_PATH

    try:
        from basic_pitch.inference import Model
    except ImportError:  # older releases: predict() loads the path itself
        return ICASSP_2022_MODEL_PATH
    return Model(ICASSP_2022_MODEL_PATH)


def _basic_pitch_salience(x: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    import soundfile as sf
    from basic_pitch.constants import AUDIO_SAMPLE_RATE, FFT_HOP
    from basic_pitch.inference import predict

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        sf.write(path, x, sr, subtype="PCM_16")
        model_output, _, _ = predict(str(path), _basic_pitch_model())
    contour = np.asarray(model_output["contour"], dtype=np.float32)  # [frames, 264], 3 bins/semitone from A0
    first = MELODY_LOW_MIDI - 21
    pooled = contour[:, 3 * first: 3 * (first + N_MELODY_NOTES)].reshape(len(contour), N_MELODY_NOTES, 3).max(-1)
    return pooled, AUDIO_SAMPLE_RATE / FFT_HOP


def harmonic_salience(x: np.ndarray, sr: int, hop_seconds: float = 0.0116, harmonics: int = 8) -> tuple[np.ndarray, float]:
    """Fallback salience ``[frames, 53]`` in [0, 1] and its frame rate (see module docstring)."""
    n_fft = 1 << int(np.ceil(np.log2(sr * 0.128)))  # 4096 at 32 kHz: ~7.8 Hz bins
    hop = max(1, int(round(sr * hop_seconds)))
    mag = np.sqrt(_stft_mag(x, n_fft, hop))
    bin_hz = sr / n_fft
    midi = MELODY_LOW_MIDI + np.arange(N_MELODY_NOTES)
    f0 = 440.0 * 2 ** ((midi - 69) / 12.0)
    sal = np.zeros((len(mag), N_MELODY_NOTES), dtype=np.float32)
    nyq = mag.shape[1] - 1
    for h in range(1, harmonics + 1):
        centre = h * f0 / bin_hz
        ok = centre < nyq - 1
        c = np.round(centre[ok]).astype(int)
        peak = np.maximum(np.maximum(mag[:, c - 1], mag[:, c]), mag[:, c + 1])
        sal[:, ok] += (0.8 ** (h - 1)) * peak
    sal /= sal.max() + 1e-9
    return sal, sr / hop


def melody_from_audio(audio, sr: int, frame_rate: float, n_frames: int | None = None,
                      method: str = "auto", threshold: float = MELODY_THRESHOLD) -> dict[str, Any]:
    """Estimate the melody control: ``{"melody": int64[T], "method": str}`` (53 = no note).

    ``method``: ``auto`` (basic-pitch when installed, else harmonic-sum), ``basic-pitch`` or ``harmonic-sum``.
    """
    x = _mono(audio)
    if n_frames is None:
        n_frames = int(round(len(x) / sr * frame_rate))
    if method not in ("auto", "basic-pitch", "harmonic-sum"):
        raise ValueError(f"melody method {method!r}: choose auto, basic-pitch or harmonic-sum")
    if method == "basic-pitch" or (method == "auto" and basic_pitch_available()):
        if not basic_pitch_available():
            raise RuntimeError(f"basic-pitch is not installed; install it with: {MELODY_INSTALL}")
        sal, fps = _basic_pitch_salience(x, sr)
        name = "basic-pitch"
    else:
        sal, fps = harmonic_salience(x, sr)
        name = "harmonic-sum"
    return {"melody": salience_to_frames(sal, fps, frame_rate, n_frames, threshold), "method": name}


def controls_from_audio(audio, sr: int, frame_rate: float, n_frames: int, chord_method: str = "auto",
                        melody_method: str = "auto") -> dict[str, Any]:
    """Chords and melody for unlabelled audio: ``{"chords", "melody", "methods": {"chords": .., "melody": ..}}``."""
    ch = chords_from_audio(audio, sr, chord_method)
    me = melody_from_audio(audio, sr, frame_rate, n_frames, melody_method)
    return {"chords": segments_to_frames(ch["segments"], frame_rate, n_frames), "melody": me["melody"],
            "methods": {"chords": ch["method"], "melody": me["method"]}}
