"""CLAP and Audiobox Aesthetics: the scores computed from what the models return, and skipped with the
specific reason unless weights are given; never a made-up number."""

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from arfm.evaluate.aesthetics import aesthetics_scores, score_with
from arfm.evaluate.clap import CLAP_SR, ClapScorer, clap_score

SR = 32000


def _clips(n, seconds=1.0):
    rng = np.random.default_rng(0)
    return [(0.05 * (i + 1) * rng.standard_normal(int(seconds * SR))).astype(np.float32) for i in range(n)]


def test_clap_without_checkpoint_is_skipped_and_does_not_import_laion_clap():
    code = ("import sys, numpy as np; from arfm.evaluate.clap import clap_score;"
            "r = clap_score([np.zeros(100)], ['x'], 32000, None);"
            "print(r.value is None, 'eval.clap_checkpoint' in r.skipped, 'laion_clap' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "False"], out.stderr


def test_clap_missing_file_is_skipped(tmp_path):
    r = clap_score(_clips(2), ["a", "b"], SR, str(tmp_path / "missing.pt"))
    assert r.value is None and "is not a file" in r.skipped


class _FakeClapModule:
    """LAION-CLAP's two embedding calls: the audio embedding is (rms, peak, length / 48000) of each clip and
    the text embedding (len, vowels, 1) of each caption, so every cosine can be computed by hand below."""

    def __init__(self):
        self.calls = []

    def get_audio_embedding_from_data(self, wavs, use_tensor=False):
        self.calls.append([len(w) for w in wavs])
        return np.array([[np.sqrt(np.mean(w ** 2)), np.abs(w).max(), len(w) / CLAP_SR] for w in wavs])

    def get_text_embedding(self, texts, use_tensor=False):
        return np.array([[len(t), sum(c in "aeiou" for c in t), 1.0] for t in texts], dtype=float)


def test_clap_scorer_pairs_each_clip_with_its_caption_at_48k():
    scorer = ClapScorer.__new__(ClapScorer)
    scorer.model, scorer.identity = _FakeClapModule(), "laion-clap:fake"
    clips, captions = _clips(3), ["calm piano", "fast drums and bass", "x"]
    got = scorer.score(clips, captions, SR, batch_size=2)
    assert scorer.model.calls == [[CLAP_SR, CLAP_SR], [CLAP_SR]]  # resampled to 48 kHz, in batches of 2
    from arfm.evaluate.audio import resample

    for value, clip, caption in zip(got, clips, captions):
        w = resample(clip, SR, CLAP_SR)
        a = np.array([np.sqrt(np.mean(w ** 2)), np.abs(w).max(), 1.0])
        t = np.array([len(caption), sum(c in "aeiou" for c in caption), 1.0])
        assert value == pytest.approx(a @ t / np.linalg.norm(a) / np.linalg.norm(t), rel=1e-5)
    r = clap_score(clips, captions, SR, None, scorer=scorer)
    assert r.value == pytest.approx(np.mean(got)) and r.method == "laion-clap:fake" and r.n == 3
    with pytest.raises(ValueError, match="captions"):
        scorer.score(clips, captions[:2], SR)


def test_aesthetics_skip_reasons_name_the_cause(tmp_path, monkeypatch):
    res = aesthetics_scores(_clips(2), SR, None)
    assert set(res) == {"pq", "pc", "ce", "cu"}
    assert all(r.value is None and "eval.aesthetics_checkpoint" in r.skipped for r in res.values())
    res = aesthetics_scores(_clips(2), SR, str(tmp_path / "missing.pt"))
    assert all("is not a file" in r.skipped for r in res.values())
    ck = tmp_path / "checkpoint.pt"
    ck.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "audiobox_aesthetics", None)  # the package is not installed
    monkeypatch.setitem(sys.modules, "audiobox_aesthetics.infer", None)
    res = aesthetics_scores(_clips(2), SR, str(ck))
    assert all("not importable" in r.skipped and "pip install audiobox-aesthetics" in r.skipped
               for r in res.values())

    def broken(ckpt):
        raise RuntimeError("bad checkpoint")

    pkg = types.ModuleType("audiobox_aesthetics")
    pkg.infer = types.SimpleNamespace(initialize_predictor=broken)
    monkeypatch.setitem(sys.modules, "audiobox_aesthetics", pkg)
    monkeypatch.setitem(sys.modules, "audiobox_aesthetics.infer", pkg.infer)
    res = aesthetics_scores(_clips(2), SR, str(ck))
    assert all("could not load" in r.skipped and "bad checkpoint" in r.skipped for r in res.values())


class _FakePredictor:
    """Audiobox's ``forward``: PQ is 100 x the clip's rms, PC its length in seconds, CE the sample rate / 1000;
    every other answer comes back as a JSON string, as some versions return."""

    def forward(self, batch):
        out = []
        for i, item in enumerate(batch):
            x, sr = item["path"], item["sample_rate"]
            assert x.ndim == 2 and x.shape[0] == 1
            row = {"PQ": 100 * float(x.pow(2).mean().sqrt()), "PC": x.shape[1] / sr, "CE": sr / 1000, "CU": 1.0}
            out.append(json.dumps(row) if i % 2 else row)
        return out


def test_aesthetics_scores_come_from_each_clip_in_order():
    clips = _clips(10, seconds=0.5)  # more than one batch of 8
    rows = score_with(_FakePredictor(), clips, SR)
    rms = [float(np.sqrt(np.mean(c.astype(np.float64) ** 2))) for c in clips]
    assert [r["pq"] for r in rows] == pytest.approx([100 * v for v in rms], rel=1e-5)
    assert all(r["pc"] == 0.5 and r["ce"] == 32.0 for r in rows)
    res = aesthetics_scores(clips, SR, None, predictor=_FakePredictor())
    assert res["pq"].value == pytest.approx(100 * np.mean(rms), rel=1e-5) and res["pq"].n == 10
    assert res["pq"].method == "audiobox-aesthetics"


def test_clap_offline_fails_fast_with_the_missing_files(tmp_path, monkeypatch):
    import huggingface_hub
    import torch

    from arfm.evaluate import clap

    ck = tmp_path / "clap.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, ck)
    monkeypatch.setattr(clap, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, f: None)
    r = clap_score(_clips(2), ["a", "b"], SR, str(ck))
    assert r.value is None and "hub is unreachable" in r.skipped and "roberta-base/config.json" in r.skipped
    bad = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": object()}, bad)
    r = clap_score(_clips(2), ["a", "b"], SR, str(bad))
    assert r.value is None and "weights_only=True" in r.skipped
