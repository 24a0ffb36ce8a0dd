"""Fixtures for the search tests: a small labelled corpus, tiny AR and FM models trained on it for a few dozen
steps (plain PyTorch, in-process) and logged as finished training runs of a private MLflow store. The corpus
builder and the two-CPU Ray instance are the suite's (``tests/conftest.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SR = 32000
SECONDS = 1.0
N_VALID, N_TRAIN = 4, 4


@pytest.fixture(scope="session")
def tune_corpus(tmp_path_factory, labelled_corpus):
    """8 clips of 1 s from the synthetic corpus: 4 valid (the prompts), 4 train (FAD's real set)."""
    return labelled_corpus(tmp_path_factory.mktemp("tune_corpus"), N_VALID, N_TRAIN, seed=11, seconds=SECONDS)


def _train_briefly(folder, corpus, steps: int = 40) -> list[float]:
    """A few AdamW steps of the saved model on the whole corpus (its codec's latents or tokens, its text
    encoder's features), saved back into ``folder``; returns the losses."""
    from arfm.data.manifest import load_audio, read_manifest
    from arfm.latents import Codec
    from arfm.modeling import load_model_dir, save_model_dir
    from arfm.text import build_text_encoder

    cfg, meta, model = load_model_dir(folder)
    codec = Codec.load(meta["codec_path"])
    rows = read_manifest(corpus)
    audio = torch.from_numpy(np.stack([load_audio(corpus, r)[: int(SECONDS * SR)] for r in rows]))[:, None]
    text, mask = build_text_encoder(cfg.text).encode([r["caption"] for r in rows], pad_to_max=True)
    n = codec.n_frames(SECONDS)
    with torch.no_grad():
        batch = {"text": text, "text_mask": mask}
        if cfg.model.paradigm == "fm":
            batch["latent"] = codec.normalize(codec.encode_latent(audio)[:, :n])
        else:
            batch["tokens"] = codec.encode_tokens(audio)[..., :n]
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    save_model_dir(cfg, meta, model.eval(), folder)
    return losses


@pytest.fixture(scope="session")
def tune_home(tmp_path_factory):
    """A private ARFM_HOME (Tune experiments under ray_results/tune) and its MLflow store."""
    home = tmp_path_factory.mktemp("tune_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARFM_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield home, f"sqlite:///{home / 'mlflow.db'}"


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, tune_corpus, tune_home, tiny_model):
    """``{"ar": run_id, "fm": run_id}``: tiny models trained briefly and logged as finished training runs."""
    from arfm import tracking

    _, uri = tune_home
    runs = {}
    for paradigm in ("ar", "fm"):
        out = tmp_path_factory.mktemp(f"tuned_{paradigm}")
        cfg, folder = tiny_model(out, paradigm, tune_corpus, [f"tracking.uri={uri}", "tracking.experiment=tune-test",
                                                              "eval.fad_reference_clips=4"])
        losses = _train_briefly(folder, tune_corpus)
        assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses  # it learned something
        _, run_id = tracking.start_run(cfg, "train", paradigm)
        tracking.log_model_dir(uri, run_id, folder)
        tracking.finish_run(uri, run_id)
        runs[paradigm] = run_id
    return runs
