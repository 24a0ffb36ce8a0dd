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


def build_labelled_corpus(root, n_valid: int, n_train: int = 0, seed: int = 5, seconds: float = 1.5):
    """A dataset folder of synthetic clips (32 kHz) with their labels: ``c0 ...`` in the valid split, then
    ``n_train`` train clips."""
    from arfm.data.manifest import save_audio, write_manifest
    from arfm.data.synth import generate_clip

    rows = []
    for i in range(n_valid + n_train):
        clip = generate_clip(seed=seed, index=i, seconds=seconds)
        save_audio(root / "audio" / f"c{i}.wav", clip.audio, 32000)
        rows.append({"id": f"c{i}", "path": f"audio/c{i}.wav", "caption": clip.caption,
                     "split": "valid" if i < n_valid else "train", "seconds": seconds, "sample_rate": 32000,
                     "labels": clip.labels})
    write_manifest(root, rows)
    return root


@pytest.fixture(scope="session")
def labelled_corpus():
    """``labelled_corpus(root, n_valid, n_train=0, seed=5, seconds=1.5)`` (test modules cannot import this file)."""
    return build_labelled_corpus


@pytest.fixture(scope="module")
def ray_two_cpus():
    """A Ray instance of two CPUs for the tests of one module that run evaluation jobs or searches."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def save_tiny_model(out, paradigm: str, dataset, extra=()):
    """A tiny untrained model of ``paradigm`` saved as a model folder, with its codec; returns (cfg, folder)."""
    from arfm.config import resolve
    from arfm.modeling import save_untrained_model

    cfg = resolve("tiny", overrides=[f"model.paradigm={paradigm}", "text.encoder=tiny-t5", f"data.dataset={dataset}",
                                     "data.segment_seconds=1.0", "sample.seconds=1.0", "sample.steps=2",
                                     "sample.cfg=3.0", "eval.n_samples=2", "eval.euler_steps=[2]",
                                     "eval.audio_samples_logged=1", *extra])
    return cfg, save_untrained_model(cfg, out)[0]


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(out, paradigm, dataset, extra=())`` (test modules cannot import this file); used by the
    evaluation and listening-study tests."""
    return save_tiny_model
