"""Ceiling and floor rows: what the metrics give real music, the codec's reconstructions, and untrained models.

A trained model's numbers mean little alone. Every table of the report also shows, on the same prompts, with the
same metric pipeline (:mod:`arfm.evaluate.job`):

- ``reference``: the held-out reference clips themselves. Each is scored against its own exact labels (what the
  estimators give real music), FAD against the real set of train clips (the real-vs-real value at the same n);
  melody similarity compares a clip with itself, so it is 1 by construction.
- ``codec_latent`` / ``codec_tokens``: the reference clips through the codec's continuous path (what FM
  generates in) and through its RVQ tokens (what AR generates): the best any generative model on this latent
  can reach.
- ``untrained``: a model of the cell's own configuration with its initial weights (``train.seed``), sampled like
  the trained one with every variant but the one-control-at-a-time ones: the floor.

Each is one MLflow run of the study's experiment tagged ``job=baseline`` and ``baseline=<kind>``, with the
frame rate, paradigm and conditioning of what it stands beside, evaluated like a model run (``eval/...``
metrics, ``eval/per_sample.json``, audio). The grid runs them in its evaluation stage; the report puts them
under the trained rows of each table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from arfm.config import JobConfig

AUDIO_KINDS = ("reference", "codec_latent", "codec_tokens")
VAE_KIND = "vae_latent"  # the VAE's reconstructions (FM on the VAE latent's ceiling), where a cell uses the VAE
LABELS = {"reference": "reference clips (ceiling)", "codec_latent": "codec, continuous latent (FM's ceiling)",
          "codec_tokens": "codec, RVQ tokens (AR's ceiling)", "untrained": "untrained (floor)"}


def audio_cell(cfg: JobConfig, kind: str) -> str:
    """The ``study_cell`` of a reference or codec baseline (one per frame rate and duration)."""
    return f"baseline-{kind.replace('_', '-')}-{cfg.codec.frame_rate}hz-{cfg.data.segment_seconds:g}s"


def untrained_cell(cfg: JobConfig) -> str:
    return f"baseline-untrained-{cfg.study_cell or cfg.name}"


def _start(cfg: JobConfig, kind: str, cell: str, paradigm: str, extra: dict[str, Any] | None = None) -> tuple[str, str]:
    from arfm import tracking

    c = cfg.model_copy(update={"study_cell": cell})
    return tracking.start_run(c, "baseline", paradigm, {"baseline": kind, **(extra or {})}, run_name=cell)


def _round_trip(codec: Any, audio: np.ndarray, tokens: bool) -> np.ndarray:
    """One clip through the codec's continuous path or its RVQ tokens, cut to the clip's length."""
    import torch

    x = torch.from_numpy(np.asarray(audio, np.float32))[None, None].to(codec.device)
    with torch.no_grad():
        y = codec.decode_tokens(codec.encode_tokens(x)) if tokens else codec.decode_latent(codec.encode_latent(x))
    out = y[0, 0, : len(audio)].float().cpu().numpy()
    return np.pad(out, (0, len(audio) - len(out))) if len(out) < len(audio) else out


def evaluate_audio_baselines(cfg: JobConfig, kinds: tuple[str, ...] = AUDIO_KINDS) -> dict[str, str]:
    """Reference and codec rows for the prompts of ``cfg`` (a cell's config: dataset, codec, sample length,
    evaluation settings). One MLflow run per kind; returns ``{kind: run_id}``."""
    import ray

    from arfm import tracking
    from arfm.evaluate.job import _log, load_background, load_prompts, score_variants, summarize
    from arfm.latents import Codec

    unknown = set(kinds) - {*AUDIO_KINDS, VAE_KIND}
    if unknown:
        raise ValueError(f"baseline kinds {sorted(unknown)}: choose from {(*AUDIO_KINDS, VAE_KIND)}")
    codec = Codec.load(cfg.codec.pretrained or cfg.codec.path)
    vae = None
    if VAE_KIND in kinds:
        from arfm.vae_latent import VAELatent

        vae = VAELatent.load(cfg.vae.path)
    seconds = float(cfg.sample.seconds or cfg.data.segment_seconds)
    notes: list[str] = []
    prompts = load_prompts(cfg, cfg.eval.n_samples, seconds, codec.sample_rate, notes)
    if any(p["reference"] is None for p in prompts):
        raise ValueError("eval.prompts: the reference and codec rows need prompts with reference audio")
    background = load_background(cfg, seconds, codec.sample_rate, {p["id"] for p in prompts}, notes)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    uri = tracking.tracking_uri(cfg)
    outputs = {}
    for kind in kinds:
        t0 = time.perf_counter()
        refs = [p["reference"] for p in prompts]
        coder = vae if kind == VAE_KIND else codec
        audio = refs if kind == "reference" else [_round_trip(coder, a, kind == "codec_tokens") for a in refs]
        outputs[kind] = {"audio": audio, "info": [{}] * len(audio), "seconds": time.perf_counter() - t0}
    # scored together (FAD's real set embedded once), each with every metric, logged as its own run
    scored = score_variants(outputs, prompts, codec.sample_rate, cfg, background, every_metric=True)
    runs = {}
    for kind in kinds:
        variants = {"": {"sample": {}}}
        metrics, table = summarize({"": scored[kind]}, {"": outputs[kind]}, variants, prompts, notes)
        extra = {"codec": codec.identity, **({"vae": vae.identity, "latent": "vae"} if kind == VAE_KIND else {})}
        _, run_id = _start(cfg, kind, audio_cell(cfg, kind), "", extra)
        try:
            _log(uri, run_id, metrics, table, {"": outputs[kind]}, variants, prompts, codec.sample_rate, cfg)
        except BaseException:
            tracking.finish_run(uri, run_id, "FAILED")
            raise
        tracking.finish_run(uri, run_id, "FINISHED")
        runs[kind] = run_id
    return runs


def evaluate_untrained(cfg: JobConfig, meta: dict[str, Any] | None = None, tuned_from: str | None = None,
                       layer: dict[str, Any] | None = None) -> str:
    """The floor of a cell: its model with initial weights, saved and logged as the baseline run's ``model``
    artifact, then evaluated by :func:`arfm.evaluate.job.evaluate_run` like the trained run: with the sampling a
    search attached to the trained run ``tuned_from`` (when any), then ``layer`` (the user's settings).
    ``meta``: the shard metadata the model is built for (default: ``cfg.data.shards``'). Returns the run id."""
    import torch

    from arfm import tracking
    from arfm.data.loader import read_meta
    from arfm.evaluate.job import evaluate_run
    from arfm.modeling import build_generative, representation_meta, save_model_dir

    meta = meta or representation_meta(read_meta(cfg.data.shards), cfg.model.representation)
    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
    model = build_generative(cfg, meta).eval()
    uri, run_id = _start(cfg, "untrained", untrained_cell(cfg), cfg.model.paradigm)
    try:
        with tempfile.TemporaryDirectory(prefix="arfm-untrained-") as tmp:
            save_model_dir(cfg, meta, model, Path(tmp) / "model")
            tracking.log_model_dir(uri, run_id, Path(tmp) / "model", "model")
        evaluate_run(cfg, run_id=run_id, single_controls=False, tuned_from=tuned_from, layer=layer)
    except BaseException:
        tracking.finish_run(uri, run_id, "FAILED")
        raise
    tracking.finish_run(uri, run_id, "FINISHED")
    return run_id
