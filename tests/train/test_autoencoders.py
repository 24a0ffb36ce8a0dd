"""The autoencoders through the Ray Train + DeepSpeed trainer, and FM on the second latent:

* the EnCodec codec with ``codec.adversarial=true``: the discriminator trains beside it, and a run that fails
  after its first checkpoint restarts from it with the discriminator's weights and Adam moments;
* the VAE-GAN (``vae`` task, ``arfm codec train --kind vae``) saved to ``vae.path`` and tagged ``latent=vae``;
* shards holding both latents, FM trained with ``model.representation=vae`` (tagged so) and generating audio
  through the VAE it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from arfm.config import resolve

SR = 32000
SMALL = ["text.encoder=tiny-t5", "text.max_tokens=8", "data.segment_seconds=1.0", "train.log_every=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ae_data")
    (d / "audio").mkdir()
    t = np.arange(SR) / SR
    rows = []
    for i in range(8):
        x = sum(np.sin(2 * np.pi * (110 + 20 * i) * h * t) / h for h in (1, 2, 3))
        sf.write(d / "audio" / f"c{i}.wav", (0.2 * x).astype(np.float32), SR, subtype="PCM_16")
        rows.append({"id": f"c{i}", "path": f"audio/c{i}.wav", "caption": f"tone {i}", "seconds": 1.0,
                     "split": "valid" if i == 7 else "train", "sample_rate": SR,
                     "labels": {"chords": [["Am", 0.0, 1.0]], "melody": [[57 + i, 0.0, 0.5]]}})
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _ds_states(ckpt: Path) -> dict:
    from arfm.train.trainer import safe_load

    return safe_load(ckpt / "ds" / "mp_rank_00_model_states.pt")


@pytest.fixture(scope="module")
def adversarial_codec(dataset, ray_local, arfm_home):
    from arfm.train.trainer import run_training

    cfg = resolve("tiny", overrides=[*SMALL, f"data.dataset={dataset}", "codec.adversarial=true", "codec.steps=4",
                                     "codec.batch_size=4", "codec.norm_segments=4",
                                     f"codec.path={dataset.parent / 'codec'}", "train.checkpoint_every=2",
                                     "train.fail_at_step=3", "train.max_failures=1", "study_cell=adv-codec"])
    return cfg, run_training(cfg, "codec")


def test_adversarial_codec_trains_and_resumes_with_its_discriminator(adversarial_codec):
    from mlflow.tracking import MlflowClient

    cfg, r = adversarial_codec
    assert r["final_step"] == 4 and [a["start_step"] for a in r["attempts"]] == [0, 2]  # restarted at step 2
    c = MlflowClient(r["tracking_uri"])
    run = c.get_run(r["run_id"])
    assert run.data.tags["adversarial"] == "true" and run.data.tags["latent"] == "encodec"
    for name in ("disc", "gen_adv", "feat"):
        hist = c.get_metric_history(r["run_id"], name)
        assert len(hist) >= 4 and all(np.isfinite(m.value) for m in hist), name
    # the checkpoint holds the discriminator and an optimizer state (Adam's moments) for each of its parameters
    from arfm.train.task import get_task

    states = _ds_states(Path(r["checkpoint_dir"]))
    assert any(k.startswith("adversarial.discriminator.") for k in states["module"]), "no discriminator weights"
    task = get_task("codec")
    job = task.job_config(cfg)
    n_with = len(list(task.build_model(job).parameters()))
    n_without = len(list(task.build_model(job.model_copy(update={
        "codec": job.codec.model_copy(update={"adversarial": False})})).parameters()))
    opt = states["optimizer"]["state"]
    assert n_with > n_without and len(opt) == n_with
    assert all("exp_avg" in s and "exp_avg_sq" in s for s in opt.values())
    # the saved codec is the autoencoder alone (no discriminator in it), usable by preprocessing
    from arfm.latents import Codec

    codec = Codec.load(cfg.codec.path)
    assert codec.has_normalization and not any("discriminator" in k for k in codec.model.state_dict())


@pytest.fixture(scope="module")
def vae_run(dataset, ray_local, arfm_home):
    from arfm.train.trainer import run_training

    cfg = resolve("tiny", overrides=[*SMALL, f"data.dataset={dataset}", "vae.steps=3", "vae.batch_size=4",
                                     "vae.norm_segments=4", f"vae.path={dataset.parent / 'vae'}",
                                     "study_cell=vae-test"])
    return cfg, run_training(cfg, "vae")


def test_vae_trains_through_the_same_trainer(vae_run):
    from mlflow.tracking import MlflowClient

    from arfm.vae_latent import VAELatent

    cfg, r = vae_run
    assert r["final_step"] == 3 and r["metrics"]["engine"] == "DeepSpeedEngine"
    c = MlflowClient(r["tracking_uri"])
    tags = c.get_run(r["run_id"]).data.tags
    assert (tags["latent"], tags["representation"], tags["job"], tags["paradigm"]) == ("vae", "vae", "codec", "codec")
    assert len(c.get_metric_history(r["run_id"], "kl")) == 3
    assert r["run_id"] in {v.run_id for v in c.search_model_versions("name='arfm-vae'")}
    vae = VAELatent.load(cfg.vae.path)
    assert vae.has_normalization and vae.latent_dim == 64 and vae.frame_rate == 50
    assert "final/recon_si_snr_latent" in r["metrics"] and "final/recon_si_snr_tokens" not in r["metrics"]


@pytest.fixture(scope="module")
def vae_shards(dataset, vae_run, adversarial_codec):
    from arfm.data.preprocess import preprocess

    cfg = resolve("tiny", overrides=SMALL)
    out = dataset.parent / "shards"
    summary = preprocess(cfg, dataset, adversarial_codec[0].codec.path, out, vae=vae_run[0].vae.path,
                         clips_per_shard=4, executor="local", progress=False)
    return out, summary


def test_shards_hold_both_latents_and_name_them(vae_shards, vae_run):
    import pyarrow.parquet as pq

    from arfm.data.loader import read_meta
    from arfm.data.preprocess import META_KEY
    from arfm.vae_latent import VAELatent

    out, _ = vae_shards
    meta = read_meta(out)
    vae = VAELatent.load(vae_run[0].vae.path)
    assert meta["representations"] == ["encodec", "vae"] and meta["schema_version"] == 2
    assert meta["vae"] == vae.identity and meta["vae_latent_dim"] == 64
    table = pq.read_table(next((out / "train").glob("*.parquet")))
    assert json.loads(table.schema.metadata[META_KEY])["vae"] == vae.identity
    row = table.slice(0, 1).to_pylist()[0]
    assert len(row["vae_latent"]) == meta["n_frames"] * 64 and len(row["latent"]) == meta["n_frames"] * 32
    # the column is the VAE's normalized posterior mean of the segment
    audio, _ = sf.read(Path(vae_run[0].data.dataset) / "audio" / f"{row['id']}.wav", dtype="float32")
    z = vae.normalize(vae.encode_latent(torch.from_numpy(audio)[None, None]))[0, : meta["n_frames"]]
    np.testing.assert_allclose(np.asarray(row["vae_latent"]).reshape(-1, 64), z.numpy(), atol=1e-5)


def test_fm_trains_on_the_vae_latent_and_generates_through_that_vae(vae_shards, vae_run, ray_local):
    from mlflow.tracking import MlflowClient

    from arfm.generate import GenerationRequest, Generator
    from arfm.modeling import representation_meta
    from arfm.train.trainer import run_training

    out, _ = vae_shards
    cfg = resolve("tiny", overrides=[*SMALL, f"data.shards={out}", "model.paradigm=fm", "model.representation=vae",
                                     "train.steps=3", "train.batch_size=2", "train.checkpoint_every=3",
                                     "study_cell=fm-vae-test"])
    r = run_training(cfg, "fm")
    tags = MlflowClient(r["tracking_uri"]).get_run(r["run_id"]).data.tags
    assert tags["representation"] == "vae" and tags["latent"] == "vae" and tags["paradigm"] == "fm"
    meta = json.loads((Path(r["model_dir"]) / "meta.json").read_text())
    assert meta["representation"] == "vae" and meta["latent_dim"] == 64 and meta["codec"].startswith("vae-")
    gen = Generator.load(r["model_dir"])
    assert gen.codec.kind == "vae" and gen.codec.identity == meta["codec"]
    (res,) = gen.generate([GenerationRequest(caption="tone 3", seconds=1.0, seed=0)],
                          sample={"solver": "euler", "steps": 2})
    assert res.audio.shape == (SR,) and np.isfinite(res.audio).all()
    # shards without VAE latents: the error names the setting and the fix
    bare = {k: v for k, v in json.loads((out / "meta.json").read_text()).items() if k != "representations"}
    with pytest.raises(ValueError, match=r"model.representation=vae: .* --vae"):
        representation_meta(bare, "vae")
