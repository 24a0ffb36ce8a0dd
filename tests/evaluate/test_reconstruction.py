"""Appendix B reconstruction metrics: SI-SNR and log-MSD."""

import numpy as np
import pytest

from arfm.evaluate.reconstruction import log_msd, reconstruction_metrics, si_snr

SR = 16000


def test_si_snr_known_values():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(SR)
    n = rng.standard_normal(SR)
    n -= n.mean()
    n -= (np.dot(n, s - s.mean()) / np.dot(s - s.mean(), s - s.mean())) * (s - s.mean())  # orthogonal noise
    n *= np.linalg.norm(s - s.mean()) / np.linalg.norm(n) / 10 ** (10 / 20)  # 10 dB below
    assert si_snr(s + n, s) == pytest.approx(10.0, abs=1e-6)
    assert si_snr(3.0 * (s + n), s) == pytest.approx(10.0, abs=1e-6)  # scale invariant
    assert si_snr(s, s) > 100


def test_log_msd():
    x = np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    assert log_msd(x, x, SR) == 0.0
    assert log_msd(0.5 * x, x, SR) == pytest.approx(np.log10(4), rel=1e-3)  # power / 4 everywhere
    res = reconstruction_metrics([x, 0.5 * x], [x, x], SR)
    assert res["log_msd"].value == pytest.approx(np.log10(4) / 2, rel=1e-3) and res["si_snr"].n == 2


def test_evaluate_codec_on_a_dataset_split(tmp_path):
    from arfm.config import resolve
    from arfm.data.manifest import save_audio, write_manifest
    from arfm.evaluate.reconstruction import evaluate_codec
    from arfm.latents import Codec

    sr = 32000
    rows = []
    for i, split in enumerate(["valid", "valid", "train"]):
        t = np.arange(sr) / sr
        tone = (0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype(np.float32)
        save_audio(tmp_path / "audio" / f"c{i}.wav", tone, sr)
        rows.append({"id": f"c{i}", "path": f"audio/c{i}.wav", "caption": "tone", "split": split, "seconds": 1.0,
                     "sample_rate": sr, "labels": None})
    write_manifest(tmp_path, rows)
    codec = Codec.from_config(resolve("tiny").codec, sr)
    rep = evaluate_codec(codec, str(tmp_path), "valid", max_clips=8, seconds=0.5)
    assert rep["n_clips"] == 2 and rep["seconds"] == 0.5 and [c["id"] for c in rep["clips"]] == ["c0", "c1"]
    assert set(rep["summary"]) == {"si_snr_latent", "si_snr_tokens", "log_msd_latent", "log_msd_tokens"}
    assert all(np.isfinite(v) for v in rep["summary"].values()) and rep["summary"]["log_msd_latent"] > 0
    with pytest.raises(ValueError, match="no 'nope' clips"):
        evaluate_codec(codec, str(tmp_path), "nope")
