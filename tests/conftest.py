"""Suite-wide settings: one intra-op thread per test process, and the rule for optional estimators.

The models under test are tiny; on a 2-core machine two OpenMP threads per op spin against each other (and
against Ray workers started by other tests) and make small matrix products many times slower.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def require_estimator():
    """``require_estimator(availability)``: a missing optional estimator (Chordino, madmom) fails the test with
    the import error; with ``ARFM_ALLOW_MISSING_ESTIMATORS=1`` (machines that cannot install them) it skips."""
    from arfm.evaluate.estimators import ALLOW_MISSING_ENV

    def check(availability) -> None:
        if availability:
            return
        if os.environ.get(ALLOW_MISSING_ENV) == "1":
            pytest.skip(f"{availability} ({ALLOW_MISSING_ENV}=1)")
        pytest.fail(f"{availability}. Install it with `bash infra/install.sh --dev`, or set {ALLOW_MISSING_ENV}=1 "
                    "to skip the tests that need it", pytrace=False)

    return check


def save_tiny_model(out, paradigm: str, dataset, extra=()):
    """A tiny untrained model of ``paradigm`` saved as a model folder, with its codec; returns (cfg, folder)."""
    import torch

    from arfm.config import resolve
    from arfm.latents import Codec
    from arfm.modeling import build_generative, save_model_dir
    from arfm.text import build_text_encoder

    cfg = resolve("tiny", overrides=[f"model.paradigm={paradigm}", "text.encoder=tiny-t5", f"data.dataset={dataset}",
                                     "data.segment_seconds=1.0", "sample.seconds=1.0", "sample.steps=2",
                                     "sample.cfg=3.0", "eval.n_samples=2", "eval.euler_steps=[2]",
                                     "eval.audio_samples_logged=1", *extra])
    codec = Codec.from_config(cfg.codec, cfg.data.sample_rate)
    codec.set_normalization(0.0, 1.0)
    codec.save(out / "codec")
    text = build_text_encoder(cfg.text)
    meta = {"codec": codec.identity, "codec_path": str(out / "codec"), "frame_rate": codec.frame_rate,
            "n_codebooks": codec.n_codebooks, "codebook_size": codec.codebook_size, "latent_dim": codec.latent_dim,
            "text_encoder": text.identity, "text_dim": text.dim, "controls": list(cfg.model.controls)}
    torch.manual_seed(0)
    save_model_dir(cfg, meta, build_generative(cfg, meta), out / "model")
    return cfg, out / "model"


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(out, paradigm, dataset, extra=())`` (test modules cannot import this file); used by the
    evaluation and listening-study tests."""
    return save_tiny_model
