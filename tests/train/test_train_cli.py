"""``arfm train`` for the tiny AR and FM models on real shards: DeepSpeed engaged, MLflow run complete, model
artifact loadable. Shards are written in-process from a tiny synthetic dataset and an untrained codec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SR = 32000
SMALL = ["text.encoder=tiny-t5", "text.max_tokens=8", "data.segment_seconds=1.0"]


def _dataset(d: Path, n: int = 8, seconds: float = 1.0) -> None:
    (d / "audio").mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    rows = []
    for i in range(n):
        sf.write(d / "audio" / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (220 + 30 * i) * t)).astype(np.float32), SR,
                 subtype="PCM_16")
        rows.append({"id": f"c{i}", "path": f"audio/c{i}.wav", "caption": f"tone {i}", "seconds": seconds,
                     "split": "valid" if i == n - 1 else "train", "sample_rate": SR,
                     "labels": {"chords": [["Am", 0.0, seconds]], "melody": [[57 + i, 0.0, seconds / 2]]}})
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from arfm.config import resolve
    from arfm.data.preprocess import preprocess
    from arfm.latents import Codec

    root = tmp_path_factory.mktemp("cli_shards")
    _dataset(root / "ds")
    cfg = resolve("tiny", overrides=SMALL)
    preprocess(cfg, root / "ds", Codec.from_config(cfg.codec, SR), root / "shards", clips_per_shard=2,
               executor="local", progress=False)
    return root / "shards"


@pytest.mark.parametrize("paradigm", ["ar", "fm"])
def test_arfm_train_tiny_model_on_one_cpu_worker(paradigm, shards, ray_local, arfm_home):
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from arfm import tracking
    from arfm.cli import app
    from arfm.modeling import load_model_dir

    sets = [*SMALL, f"data.shards={shards}", "train.steps=3", "train.batch_size=2", "train.log_every=1",
            "train.checkpoint_every=2", f"study_cell=cli-{paradigm}"]
    res = CliRunner().invoke(app, ["train", "--preset", "tiny", "--task", paradigm,
                                   *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.rindex("\n{") + 1 if "\n{" in res.output else res.output.index("{"):])
    assert out["final_step"] == 3 and out["stopped"] == "completed" and out["attempt_start_steps"] == [0]

    c = MlflowClient(out["tracking_uri"])
    run = c.get_run(out["run_id"])
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert tags["engine"] == "DeepSpeedEngine" and tags["paradigm"] == paradigm and tags["job"] == "train"
    assert set(tracking.REQUIRED_TAGS) <= set(tags) and tags["study_cell"] == f"cli-{paradigm}"
    assert params["model.paradigm"] == paradigm and params["train.steps"] == "3"
    assert params["data.shards"] == str(shards)
    losses = c.get_metric_history(out["run_id"], "loss")
    assert [m.step for m in losses] == [1, 2, 3] and all(np.isfinite(m.value) for m in losses)
    assert len(c.get_metric_history(out["run_id"], "grad_norm")) == 3
    if paradigm == "ar":
        assert len(c.get_metric_history(out["run_id"], "tokens_per_s")) == 3  # AR batches carry tokens
    assert {a.path for a in c.list_artifacts(out["run_id"], "model")} >= {
        "model/config.yaml", "model/weights.pt", "model/meta.json"}
    assert out["run_id"] in {v.run_id for v in c.search_model_versions(f"name='arfm-{paradigm}'")}

    cfg, meta, model = load_model_dir(out["model_dir"])  # weights.pt loads weights-only into the same model
    assert cfg.model.paradigm == paradigm and meta["n_frames"] == 50
    saved = torch.load(Path(out["model_dir"]) / "weights.pt", weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())

    if paradigm == "ar":  # fine-tuning FIM from this run: the loop's model before its first step is the run's
        from arfm.config import resolve
        from arfm.train.local import train_local

        lines: list[str] = []
        ft = resolve("tiny", overrides=[*sets, f"train.init_from=runs:/{out['run_id']}/model", "model.inpainting=fim",
                                        f"tracking.uri={out['tracking_uri']}", "train.seed=5"])
        start = train_local(ft, "ar", steps=0, log=lines.append).state_dict()
        for k, v in saved.items():
            assert torch.equal(start[k][: v.shape[0]] if k.startswith("embed.") else start[k], v), k
        assert any(line.startswith(f"init_from runs:/{out['run_id']}/model (arfm)") for line in lines)
