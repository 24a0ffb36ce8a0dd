"""Codec reconstruction metrics of appendix B: SI-SNR and log-MSD (ViSQOL when ``visqol-python`` is added).

SI-SNR (Le Roux et al., 2019), in dB, of a reconstruction ``ŝ`` of ``s`` (both made zero-mean; computed by
auraloss's ``SISDRLoss``, the same quantity)::

    s_t = (<ŝ, s> / ||s||^2) s ,  e = ŝ - s_t ,  SI-SNR = 10 log10(||s_t||^2 / ||e||^2)

log-MSD: the paper names it without a formula; we read it as the log mel-spectral distance, the mean absolute
difference of log10 mel power spectrograms::

    log-MSD = mean_{t,f} | log10(M_s[t, f] + 1e-5) - log10(M_ŝ[t, f] + 1e-5) |

with ``M`` a 64-band mel power spectrogram (the clip's own rate, ``torch.stft`` with a Hann window of 2048,
hop 512, centred; librosa's Slaney mel filters).
Lower is better; 0 for a perfect reconstruction. Values are per clip; the dataset value is the mean.

:func:`evaluate_codec` runs both on a dataset split through a :class:`arfm.latents.Codec` (used by the codec
training task and ``arfm codec eval``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from arfm.evaluate.audio import as_mono
from arfm.evaluate.results import MetricResult


def si_snr(estimate: Any, reference: Any, eps: float = 1e-8) -> float:
    """Scale-invariant SNR in dB (both clips cut to the shorter length): ``-auraloss.time.SISDRLoss`` with
    zero-mean inputs, in float64."""
    import torch
    from auraloss.time import SISDRLoss

    s, e = as_mono(reference).astype(np.float64), as_mono(estimate).astype(np.float64)
    n = min(len(s), len(e))
    loss = SISDRLoss(zero_mean=True, eps=eps, reduction="none")
    return float(-loss(torch.from_numpy(e[:n])[None], torch.from_numpy(s[:n])[None])[0])


def _log_mel(x: np.ndarray, sr: int, n_fft: int = 2048, hop: int = 512, n_mels: int = 64) -> np.ndarray:
    import torch
    from librosa import filters

    window = torch.hann_window(n_fft, dtype=torch.float64)
    stft = torch.stft(torch.from_numpy(x.astype(np.float64)), n_fft, hop_length=hop, window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    power = (stft.abs() ** 2).T.numpy()  # [frames, bins]
    mel = power @ filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels).T
    return np.log10(mel + 1e-5)


def log_msd(estimate: Any, reference: Any, sample_rate: int) -> float:
    """Mean absolute log10 mel-spectrogram difference (see module doc)."""
    s, e = as_mono(reference), as_mono(estimate)
    n = min(len(s), len(e))
    return float(np.mean(np.abs(_log_mel(s[:n], sample_rate) - _log_mel(e[:n], sample_rate))))


def reconstruction_metrics(estimates: Sequence[Any], references: Sequence[Any],
                           sample_rate: int) -> dict[str, MetricResult]:
    """``{"si_snr", "log_msd"} -> MetricResult`` over pairs of (reconstruction, original) clips."""
    if len(estimates) != len(references):
        raise ValueError(f"{len(estimates)} reconstructions but {len(references)} originals")
    return {
        "si_snr": MetricResult.from_samples("si_snr", [si_snr(e, r) for e, r in zip(estimates, references)], "si-snr"),
        "log_msd": MetricResult.from_samples("log_msd", [log_msd(e, r, sample_rate)
                                                         for e, r in zip(estimates, references)], "log-mel L1"),
    }


def evaluate_codec(codec: Any, dataset: str, split: str = "valid", max_clips: int = 32, seconds: float | None = None,
                   batch_size: int = 8) -> dict[str, Any]:
    """Appendix B on a dataset split: SI-SNR and log-MSD of ``decode_latent(encode_latent(x))`` (the
    continuous path FM uses; the paper's "EnCodec was sampled without quantization") and of
    ``decode_tokens(encode_tokens(x))`` (the AR path; not for a VAE, which has no tokens), over the first ``max_clips`` clips of ``split`` cut to
    ``seconds`` (default: the shortest clip, at most 10 s).

    Returns ``{"codec", "frame_rate", "sample_rate", "split", "n_clips", "seconds", "summary": {"si_snr_latent",
    "si_snr_tokens", "log_msd_latent", "log_msd_tokens"}, "clips": [{"id", <same keys>}, ...]}``; raises
    ``ValueError`` when the split has no clips.
    """
    import torch

    from arfm.data.manifest import load_audio, read_manifest
    from arfm.evaluate.audio import resample

    rows = read_manifest(dataset, split)[: max(0, int(max_clips))]
    if not rows:
        raise ValueError(f"{dataset}: no {split!r} clips to evaluate the codec on")
    if seconds is None:
        seconds = min(10.0, min(float(r["seconds"]) for r in rows))
    n = codec.n_samples(seconds)
    sr = int(codec.sample_rate)
    clips = []
    for r in rows:
        x = load_audio(dataset, r)
        x = resample(x, int(r.get("sample_rate") or sr), sr)
        clips.append(np.pad(x[:n], (0, max(0, n - len(x)))).astype(np.float32))
    per_clip: list[dict[str, Any]] = []
    paths = ("latent", "tokens") if getattr(codec, "n_codebooks", 0) else ("latent",)  # a VAE has no tokens
    for i in range(0, len(clips), batch_size):
        batch = torch.from_numpy(np.stack(clips[i:i + batch_size]))[:, None, :]
        with torch.no_grad():
            latent = codec.encode_latent(batch)
            recs = {"latent": codec.decode_latent(latent).float().cpu().numpy()[:, 0]}
            if "tokens" in paths:
                recs["tokens"] = codec.decode_tokens(codec.quantize(latent)).float().cpu().numpy()[:, 0]
        for j in range(batch.shape[0]):
            ref = clips[i + j]
            row: dict[str, Any] = {"id": rows[i + j]["id"]}
            for path, rec in recs.items():
                row[f"si_snr_{path}"] = si_snr(rec[j][:n], ref)
                row[f"log_msd_{path}"] = log_msd(rec[j][:n], ref, sr)
            per_clip.append(row)
    keys = tuple(f"{m}_{path}" for m in ("si_snr", "log_msd") for path in paths)
    summary = {k: float(np.mean([c[k] for c in per_clip])) for k in keys}
    return {"codec": codec.identity, "frame_rate": float(codec.frame_rate), "sample_rate": sr, "split": split,
            "n_clips": len(per_clip), "seconds": float(seconds), "summary": summary, "clips": per_clip}
