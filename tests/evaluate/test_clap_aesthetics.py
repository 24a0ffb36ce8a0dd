"""CLAP and Audiobox Aesthetics: skipped with a reason unless weights are given; never a made-up number."""

import json
import subprocess
import sys

import numpy as np
import pytest

from arfm.evaluate.aesthetics import aesthetics_scores, score_with
from arfm.evaluate.clap import clap_score

SR = 32000
CLIPS = [np.zeros(SR, dtype=np.float32), 0.1 * np.ones(SR, dtype=np.float32)]


def test_clap_without_checkpoint_is_skipped_and_does_not_import_laion_clap():
    code = ("import sys, numpy as np; from arfm.evaluate.clap import clap_score;"
            "r = clap_score([np.zeros(100)], ['x'], 32000, None);"
            "print(r.skipped is not None and r.value is None, 'laion_clap' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stderr


def test_clap_missing_file_is_skipped(tmp_path):
    r = clap_score(CLIPS, ["a", "b"], SR, str(tmp_path / "missing.pt"))
    assert r.value is None and "not a file" in r.skipped


def test_clap_scores_with_a_given_scorer():
    class Fake:
        identity = "fake-clap"

        def score(self, audios, captions, sample_rate):
            return [0.25, 0.75]

    r = clap_score(CLIPS, ["a", "b"], SR, None, scorer=Fake())
    assert r.ok and r.value == pytest.approx(0.5) and r.method == "fake-clap" and r.n == 2


def test_aesthetics_skip_reasons(tmp_path):
    res = aesthetics_scores(CLIPS, SR, None)
    assert set(res) == {"pq", "pc", "ce", "cu"}
    assert all(r.value is None and "eval.aesthetics_checkpoint" in r.skipped for r in res.values())
    ck = tmp_path / "checkpoint.pt"
    ck.write_bytes(b"x")
    res = aesthetics_scores(CLIPS, SR, str(ck))
    assert all(r.value is None and r.skipped for r in res.values())


def test_aesthetics_with_a_predictor_returning_json_or_dicts():
    class Fake:
        def forward(self, batch):
            assert all(b["path"].shape[0] == 1 and b["sample_rate"] == SR for b in batch)
            return [json.dumps({"CE": 7.0, "CU": 6.0, "PC": 5.0, "PQ": 8.0}),
                    {"CE": 5.0, "CU": 4.0, "PC": 3.0, "PQ": 6.0}]

    rows = score_with(Fake(), CLIPS, SR)
    assert rows[0] == {"pq": 8.0, "pc": 5.0, "ce": 7.0, "cu": 6.0}
    res = aesthetics_scores(CLIPS, SR, None, predictor=Fake())
    assert res["pq"].value == pytest.approx(7.0) and res["ce"].value == pytest.approx(6.0)


def test_clap_offline_fails_fast_with_the_missing_files(tmp_path, monkeypatch):
    import huggingface_hub
    import torch

    from arfm.evaluate import clap

    ck = tmp_path / "clap.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, ck)
    monkeypatch.setattr(clap, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, f: None)
    r = clap_score(CLIPS, ["a", "b"], SR, str(ck))
    assert r.value is None and "hub is unreachable" in r.skipped and "roberta-base/config.json" in r.skipped
    bad = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": object()}, bad)
    r = clap_score(CLIPS, ["a", "b"], SR, str(bad))
    assert r.value is None and "weights_only=True" in r.skipped
