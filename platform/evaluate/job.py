"""The evaluation job: generate N samples from a trained model, score them in parallel Ray tasks, log to MLflow.

``evaluate_run(run_id=..., layer=...)`` (``arfm evaluate --run RUN_ID``) loads the model through the one
generation API (:class:`arfm.generate.Generator`). Its settings are the run's own config (what the model was
trained and sampled with), then what the user gave (:func:`user_layer`: the ``sample`` / ``eval`` /
``tracking`` sections of ``--preset`` and ``--config``, then each ``--set``); the grid passes its cell's config
instead. It takes N distinct prompts from the held-out split of the model's dataset (caption, reference audio
and, on the synthetic corpus, the exact chord / melody / downbeat labels; fewer when the split holds fewer,
with a note) and generates them under each sampling *variant*, always with the evaluation's ``sample`` config:

- the default sampling (no variant prefix: ``eval/fad`` ...);
- FM: fixed-step Euler at every count of ``eval.euler_steps`` (``eval/euler<N>/...``, table 8 / figure 3), and
  beside each count N, midpoint / Heun at N/2 steps (``nfe<N>_midpoint`` ...) and Euler N on a time-shifted
  grid (``nfe<N>_shift``) when ``eval.equal_nfe_solvers`` / ``eval.shifted_euler`` ask for them;
- models with controls: each control alone, the others null (``eval/single_<name>/...``, table 3);
- inpainting models: the masked-span edit of section 5.3 (``eval/inpaint/...``), and for text-only FM models
  zero-shot inpainting by inversion (``eval/inpaint_zs/...``, table 4).

Each metric of each variant is one Ray task. Aggregates go to the model's run as metrics, each with an
``eval/<key>.method`` tag (estimator or embedding, reference, interval method, fallback or skip reason); the
settings used go to tags ``eval/sample.*`` / ``eval/eval.*`` and ``eval/config.yaml``; every per-sample value,
the methods, notes, skip reasons and AR entropy curves (appendix I) go to ``eval/per_sample.json``; a few
clips with their captions to ``eval/audio``; the run is then tagged ``evaluated=true``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from arfm.config import JobConfig, dump_yaml, merge_sample
from arfm.evaluate.prompts import crop_labels, load_background, load_prompts  # noqa: F401 (the job's API)

INPAINT_SPAN_FRAC, INPAINT_MARGIN_FRAC = 0.5, 0.1  # a 5 s span of a 10 s clip, >= 1 s of context each side


# ------------------------------------------------------------------------------------------- metrics (Ray)
def score_metric(kind: str, audios: list[np.ndarray], refs: list[Any], captions: list[str], sample_rate: int,
                 cfg_eval: dict[str, Any]) -> list[dict[str, Any]]:
    """One metric over one variant's clips; returns ``MetricResult.to_dict()`` rows (aesthetics gives four).
    The evaluation runs it as one Ray task per (variant, metric); a sampling search's trial calls it in its own
    process (:mod:`arfm.tune.trial`), so both score alike. ``cfg_eval``: :func:`eval_settings`."""
    if kind in ("fad", "fad2"):
        from arfm.evaluate.fad import fad_score

        model = cfg_eval["fad_model" if kind == "fad" else "fad_second"]
        if isinstance(refs, dict):  # {"embeddings": [...]} of the reference set, embedded once for every variant
            r = fad_score(audios, None, sample_rate, model=model, ref_embeddings=refs["embeddings"])
        else:
            r = fad_score(audios, refs, sample_rate, model=model)
        r.name = kind
        if r.value is not None and cfg_eval.get("fad_reference_desc"):
            r.method = f"{r.method} vs {cfg_eval['fad_reference_desc']}"  # what the real set was
        res = [r]
    elif kind == "chord_iou":
        from arfm.evaluate.chords import chord_iou_metric

        res = [chord_iou_metric(audios, refs, sample_rate)]
    elif kind == "beat_f1":
        from arfm.evaluate.beats import beat_f1_metric

        res = [beat_f1_metric(audios, refs, sample_rate)]
    elif kind == "melody_sim":
        from arfm.evaluate.melody import melody_similarity_metric

        res = [melody_similarity_metric(audios, refs, sample_rate)]
    elif kind == "clap":
        from arfm.evaluate.clap import clap_score

        res = [clap_score(audios, captions, sample_rate, cfg_eval.get("clap_checkpoint"))]
    elif kind == "aesthetics":
        from arfm.evaluate.aesthetics import aesthetics_scores

        res = list(aesthetics_scores(audios, sample_rate, cfg_eval.get("aesthetics_checkpoint")).values())
    else:
        raise ValueError(f"unknown metric task {kind!r}")
    return [r.to_dict() for r in res]


def metric_references(prompts: list[dict[str, Any]], background: list[np.ndarray] | None = None,
                      second_fad: bool = False) -> dict[str, list[Any]]:
    """Metric -> what each sample is compared against: the exact labels when the corpus has them, else the
    reference audio; FAD (and ``fad2``) the ``background`` set of real clips when given, else the prompts'
    reference clips; CLAP and aesthetics take none. Without reference audio only those two run."""
    refs_audio = [p["reference"] for p in prompts]
    labels = [p["labels"] for p in prompts]
    refs: dict[str, list[Any]] = {"clap": [None] * len(prompts), "aesthetics": [None] * len(prompts)}
    if background:
        refs["fad"] = background
    if all(r is not None for r in refs_audio):
        refs.setdefault("fad", refs_audio)
        refs["chord_iou"] = [lab["chords"] if lab else ref for lab, ref in zip(labels, refs_audio)]
        refs["beat_f1"] = [lab["downbeats"] if lab else ref for lab, ref in zip(labels, refs_audio)]
        # the paper compares chromagrams of generated and reference audio (MusicGen's metric)
        refs["melody_sim"] = refs_audio
    if second_fad and "fad" in refs:
        refs["fad2"] = refs["fad"]
    return refs


def fad_reference_desc(background: list[np.ndarray] | None) -> str:
    return f"{len(background)} train clips" if background else "the prompts' reference clips"


def eval_settings(cfg: JobConfig, background: list[np.ndarray] | None) -> dict[str, Any]:
    """The ``eval`` section as :func:`score_metric` takes it, with what FAD's real set is."""
    return {**cfg.eval.model_dump(), "fad_reference_desc": fad_reference_desc(background)}


def embed_reference(model: str, clips: list[np.ndarray], sample_rate: int) -> dict[str, Any]:
    """FAD's reference set embedded once (``{"embeddings": [frames x D per clip]}``) for every variant's task."""
    from arfm.evaluate.fad import FADModelUnavailable, embed, get_loader

    try:
        return {"embeddings": embed(clips, sample_rate, get_loader(model))}
    except FADModelUnavailable:
        return {"embeddings": None}


# What each variant's table reports (``eval.variant_metrics=tables``): the default sampling scores every metric;
# the other variants the columns of their table (table 8: solvers; table 4: inpainting; table 3: single controls).
_SET_QUALITY = ("fad", "fad2", "clap", "aesthetics")
_SINGLE = {"single_chords": "chord_iou", "single_melody": "melody_sim", "single_drums": "beat_f1"}


def variant_metrics(variant: str, kinds: list[str], mode: str = "tables") -> list[str]:
    """The metrics scored for ``variant``: all of ``kinds`` (``mode=all`` or the default variant), else what the
    variant's table shows."""
    if mode == "all" or not variant:
        return list(kinds)
    keep = set(_SET_QUALITY) | ({_SINGLE[variant]} if variant in _SINGLE else set())
    return [k for k in kinds if k in keep]


def score_variants(variants: dict[str, dict[str, Any]], prompts: list[dict[str, Any]], sample_rate: int,
                   cfg: JobConfig, background: list[np.ndarray] | None = None,
                   every_metric: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
    """Every (variant, metric) pair as one Ray task; ``{variant: {metric: result dict}}``. The metrics of a variant
    follow ``eval.variant_metrics`` (:func:`variant_metrics`) unless ``every_metric``."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=1)(score_metric)
    cfg_eval = eval_settings(cfg, background)
    captions = [p["caption"] for p in prompts]
    # the references are the same for every variant: into the object store once; FAD's set embedded once
    refs_by_metric = metric_references(prompts, background, second_fad=bool(cfg.eval.fad_second))
    shared = {kind: ray.put(ref_list) for kind, ref_list in refs_by_metric.items()}
    embedder = ray.remote(num_cpus=1, max_retries=1)(embed_reference)
    for kind, model in (("fad", cfg.eval.fad_model), ("fad2", cfg.eval.fad_second)):
        if kind in shared and len(variants) > 1:
            shared[kind] = embedder.remote(model, shared[kind], sample_rate)
    refs: dict[Any, tuple[str, str]] = {}
    for variant, out in variants.items():
        audios = ray.put(out["audio"])
        for kind in variant_metrics(variant, list(shared), "all" if every_metric else cfg.eval.variant_metrics):
            refs[task.remote(kind, audios, shared[kind], captions, sample_rate, cfg_eval)] = (variant, kind)
    scores: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in variants}
    for ref, (variant, _) in refs.items():
        for row in ray.get(ref):
            scores[variant][row["name"]] = row
    return scores


# ----------------------------------------------------------------------------------------- generation
def _span(n_seconds: float, rng: np.random.Generator) -> tuple[float, float]:
    length = INPAINT_SPAN_FRAC * n_seconds
    lo, hi = INPAINT_MARGIN_FRAC * n_seconds, n_seconds - INPAINT_MARGIN_FRAC * n_seconds - length
    start = float(rng.uniform(lo, max(lo, hi)))
    return start, start + length


def inpaint_spans(n: int, seconds: float, seed: int) -> list[tuple[float, float]]:
    """The masked span of each of ``n`` prompts, as an evaluation seeded ``seed`` (``train.seed``) draws them."""
    rng = np.random.default_rng(seed)
    return [_span(seconds, rng) for _ in range(n)]


def build_variants(gen: Any, cfg: JobConfig, single_controls: bool = True) -> dict[str, dict[str, Any]]:
    """Variant name ("" for the default) -> ``{"sample": overrides, "controls": names|None, "inpaint": mode}``.
    ``single_controls=False`` (the untrained floor models) keeps the default sampling and inpainting only: no
    one-control-at-a-time, fixed-step or extra-solver variants."""
    variants: dict[str, dict[str, Any]] = {}
    model_cfg = gen.cfg.model
    if model_cfg.inpainting != "none":
        variants["inpaint"] = {"sample": {}, "inpaint": "fim" if gen.paradigm == "ar" else "supervised"}
        return variants
    variants[""] = {"sample": {}, "controls": list(model_cfg.controls) or None}
    if gen.paradigm == "fm":
        for steps in (cfg.eval.euler_steps if single_controls else []):
            if not (cfg.sample.solver == "euler" and cfg.sample.steps == steps):
                variants[f"euler{steps}"] = {"sample": {"solver": "euler", "steps": steps}}
            else:
                variants[f"euler{steps}"] = {"alias": ""}
        if single_controls and not model_cfg.controls:  # table 8's rows: text models; floors: fixed steps only
            for solver in cfg.eval.extra_solvers:
                variants[solver] = {"alias": ""} if cfg.sample.solver == solver else {"sample": {"solver": solver}}
            variants.update(few_step_variants(cfg))
        if not model_cfg.controls:
            variants["inpaint_zs"] = {"sample": {}, "inpaint": "zero_shot"}
    if len(model_cfg.controls) > 1 and single_controls:
        for name in model_cfg.controls:
            variants[f"single_{name}"] = {"sample": {}, "controls": [name]}
    return variants


def few_step_variants(cfg: JobConfig) -> dict[str, dict[str, Any]]:
    """Table 8's few-step rows beside Euler N: midpoint / Heun at N/2 steps (equal NFE) and Euler N on the
    time-shifted grid (``nfe<N>_<solver>``, ``nfe<N>_shift``)."""
    e = cfg.eval
    counts = e.few_step_nfe if e.few_step_nfe is not None else e.euler_steps
    out: dict[str, dict[str, Any]] = {}
    for n in counts:
        if n % 2 == 0:
            for solver in e.equal_nfe_solvers:
                out[f"nfe{n}_{solver}"] = {"sample": {"solver": solver, "steps": n // 2}}
        if e.shifted_euler is not None:
            out[f"nfe{n}_shift"] = {"sample": {"solver": "euler", "steps": n, "time_shift": e.shifted_euler}}
    return out


def _controls_for(gen: Any, prompt: dict[str, Any], names: list[str] | None, n_frames: int) -> dict | None:
    if not names:
        return None
    import torch

    from arfm.controls import controls_from_labels, drums_from_latent

    out: dict[str, list[int]] = {}
    labels = prompt["labels"]
    if labels and ({"chords", "melody"} & set(names)):
        frames = controls_from_labels(labels, gen.frame_rate, n_frames)
        out.update({k: frames[k].tolist() for k in ("chords", "melody") if k in names})
    if "drums" in names and prompt["reference"] is not None:
        audio = torch.from_numpy(prompt["reference"])[None, None].to(gen.device)
        latent = gen.codec.encode_latent(audio)[:, :n_frames]
        out["drums"] = drums_from_latent(gen.codec, latent)[0].tolist()
    return out or None


def generate_variant(gen: Any, prompts: list[dict[str, Any]], spec: dict[str, Any], cfg: JobConfig,
                     seconds: float, offset: int = 0) -> dict[str, Any]:
    """Generate ``prompts`` under one variant; prompt ``i`` gets the seed ``train.seed + offset + i``, so the
    prompts ``offset ...`` of a list generated in slices get the seeds they get generated at once."""
    from arfm.generate import GenerationRequest

    n_frames = gen.n_frames(seconds)
    spans = inpaint_spans(offset + len(prompts), seconds, cfg.train.seed)[offset:]  # as if generated at once
    reqs = []
    for i, p in enumerate(prompts):
        req = GenerationRequest(caption=p["caption"], seconds=seconds, seed=cfg.train.seed + offset + i,
                                controls=_controls_for(gen, p, spec.get("controls"), n_frames))
        if spec.get("inpaint"):
            req.inpaint_audio, req.inpaint_span = p["reference"], spans[i]
            req.inpaint_mode = spec["inpaint"]
        reqs.append(req)
    # the evaluation's sampling config, with the variant's changes: never the model's training-time defaults
    sample = merge_sample(cfg.sample.model_dump(), spec.get("sample") or {})
    t0 = time.perf_counter()
    results = gen.generate(reqs, sample=sample, batch_size=cfg.eval.batch_size,
                           return_entropy=gen.paradigm == "ar" and not spec.get("inpaint"))
    return {"audio": [r.audio for r in results], "info": [r.info for r in results],
            "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------- job
def resolve_registered(uri: str, model: str) -> tuple[str, str]:
    """``NAME``, ``NAME/VERSION`` or ``models:/NAME/VERSION`` -> (run id, model URI) of that registered version."""
    from arfm import tracking

    try:
        version = tracking.registered_version(uri, model)
    except ValueError as exc:
        raise ValueError(f"--model: {exc}") from None
    return version.run_id, f"models:/{version.name}/{version.version}"


EVAL_SECTIONS = ("sample", "eval", "tracking")


def user_layer(preset: str | None = None, config_file: str | Path | None = None,
               overrides: list[str] | tuple[str, ...] = (), extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the user gave for an evaluation, as a nested dict of the sections evaluation uses (``sample``,
    ``eval``, ``tracking``), in order: the preset's sections, the config file's, ``extra``, each ``--set``.

    The model, codec, text encoder and data of an evaluation are the run's own: a preset or config file
    contributes only its evaluation sections, and a ``--set`` of any other section is an error naming it.
    """
    from arfm.config import PRESETS, ConfigError, deep_merge, load_yaml, parse_override

    raw: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        raw = deep_merge(raw, {k: v for k, v in PRESETS[preset].items() if k in EVAL_SECTIONS})
    if config_file is not None:
        raw = deep_merge(raw, {k: v for k, v in load_yaml(config_file).items() if k in EVAL_SECTIONS})
    if extra:
        raw = deep_merge(raw, extra)
    for item in overrides:
        path, value = parse_override(item)
        if path[0] not in EVAL_SECTIONS or len(path) < 2:
            raise ConfigError(f"--set {'.'.join(path)}: an evaluation uses the run's own model, codec, text and "
                              f"data settings; only {', '.join(s + '.*' for s in EVAL_SECTIONS)} can be set")
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return raw


def evaluation_config(run_cfg: JobConfig, layer: dict[str, Any]) -> JobConfig:
    """The run's own config (what it was trained and sampled with), then the user's ``layer``."""
    from pydantic import ValidationError

    from arfm.config import ConfigError, deep_merge, format_validation_error

    try:
        return JobConfig.model_validate(deep_merge(run_cfg.model_dump(mode="json"), layer))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def evaluate_run(cfg: JobConfig | None = None, run_id: str | None = None, model: str | None = None,
                 n: int | None = None, log: bool = True, *, layer: dict[str, Any] | None = None,
                 single_controls: bool = True, tuned: bool = True, tuned_from: str | None = None
                 ) -> dict[str, Any]:
    """Evaluate a trained model (an MLflow run id or a registered ``models:/NAME/VERSION``).

    The settings are the run's own config, then the sampling a search attached to the model
    (:func:`arfm.tracking.tuned_sampling`; ``tuned=False`` ignores it, ``tuned_from`` takes another run's, e.g.
    an untrained floor sampled like its trained twin), then ``layer`` (:func:`user_layer`: the user's preset,
    config file and ``--set``, as ``arfm evaluate`` passes them). Given a whole job config ``cfg`` (a grid
    cell), the run's config takes that job's ``sample``, ``eval`` and ``tracking`` sections first. Returns
    ``{"run_id", "metrics": {key: value}, "variants": [...], "n", "notes", "config", "sampling"}``
    (``config``: the resolved settings; ``sampling``: where its sample settings came from).
    """
    import ray

    from arfm import tracking
    from arfm.config import deep_merge
    from arfm.generate import Generator

    if not run_id and not model:
        raise ValueError("evaluate: give --run RUN_ID or --model NAME")
    layer = layer or {}
    if cfg is not None:
        uri = tracking.tracking_uri(cfg)
    else:
        uri = tracking.tracking_uri(JobConfig.model_validate({"tracking": layer.get("tracking", {})}))
    if model and not Path(model).is_dir():
        run_id, source = resolve_registered(uri, model)
    else:
        source = model or f"runs:/{run_id}/model"
    gen = Generator.load(source, tracking_uri=uri)
    base = gen.cfg
    if cfg is not None:
        base = gen.cfg.model_copy(update={"sample": cfg.sample, "eval": cfg.eval, "tracking": cfg.tracking})
    best = tracking.tuned_sampling(tuned_from or run_id, uri) if tuned and (tuned_from or run_id) else None
    sampling = f"tuned: {best['from']}" if best else "the run's own sample settings"
    if best:
        layer = deep_merge({"sample": best["sample"]}, layer)  # what the user sets still wins
    eval_cfg = evaluation_config(base, layer)
    seconds = float(eval_cfg.sample.seconds or gen.cfg.data.segment_seconds)
    notes: list[str] = []
    if n:  # --n: the count asked is the evaluation's own setting (logged with the others)
        eval_cfg = eval_cfg.model_copy(update={"eval": eval_cfg.eval.model_copy(update={"n_samples": int(n)})})
    prompts = load_prompts(eval_cfg, eval_cfg.eval.n_samples, seconds, gen.sample_rate, notes)
    background = load_background(eval_cfg, seconds, gen.sample_rate, {p["id"] for p in prompts}, notes)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)

    variants = build_variants(gen, eval_cfg, single_controls)
    outputs: dict[str, dict[str, Any]] = {}
    for name, spec in variants.items():
        if "alias" in spec:
            continue
        outputs[name] = generate_variant(gen, prompts, spec, eval_cfg, seconds)
    scores = score_variants(outputs, prompts, gen.sample_rate, eval_cfg, background)
    for name, spec in variants.items():
        if "alias" in spec:
            scores[name], outputs[name] = scores[spec["alias"]], outputs[spec["alias"]]
    metrics, table = summarize(scores, outputs, variants, prompts, notes)
    if log and run_id:
        _log(uri, run_id, metrics, table, outputs, variants, prompts, gen.sample_rate, eval_cfg, sampling)
    return {"run_id": run_id, "metrics": metrics, "variants": list(scores), "n": len(prompts), "notes": notes,
            "config": eval_cfg, "sampling": sampling}


def summarize(scores: dict[str, dict[str, dict[str, Any]]], outputs: dict[str, dict[str, Any]],
              variants: dict[str, dict[str, Any]], prompts: list[dict[str, Any]], notes: list[str]):
    """The metrics to log (``eval/...``) and the :class:`PerSample` table of one evaluation."""
    from arfm.evaluate.per_sample import PerSample
    from arfm.evaluate.results import MetricResult, metric_key

    table = PerSample(ids=[p["id"] for p in prompts], captions=[p["caption"] for p in prompts])
    table.notes = list(notes)
    extra_metrics: dict[str, float] = {}
    for variant, rows in scores.items():
        for row in rows.values():
            table.add(MetricResult(name=row["name"], value=row["value"], method=row["method"],
                                   per_sample=row["per_sample"], skipped=row["skipped"],
                                   ci=tuple(row["ci"]) if row["ci"] else None, extra=row["extra"]),
                      variant or None)
        out = outputs[variant]
        extra_metrics[metric_key("gen_seconds_per_sample", variant or None)] = out["seconds"] / max(1, len(prompts))
        nfe = [i.get("nfe") for i in out["info"] if i.get("nfe") is not None]
        if nfe:
            extra_metrics[metric_key("nfe", variant or None)] = float(np.mean(nfe))
        entropy = [i["entropy"] for i in out["info"] if "entropy" in i]
        if entropy and "alias" not in variants[variant]:
            table.add_entropy(entropy, variant or None)
    return {**table.metrics(), **extra_metrics}, table


def config_tags(cfg: JobConfig) -> dict[str, str]:
    """The evaluation's own settings as run tags (``eval/sample.cfg`` ...): a run's params hold its training
    config and cannot change, while each evaluation may sample differently."""
    flat = {k: v for k, v in cfg.flat().items() if k.split(".")[0] in ("sample", "eval")}
    return {f"eval/{k}": json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flat.items()}


def _log(uri: str, run_id: str, metrics: dict[str, float], table: Any, outputs: dict, variants: dict,
         prompts: list[dict[str, Any]], sample_rate: int, cfg: JobConfig, sampling: str | None = None) -> None:
    import soundfile as sf
    from mlflow.entities import Metric, RunTag

    from arfm import tracking

    client = tracking.client(uri)
    ts = int(time.time() * 1000)
    tags = {**config_tags(cfg), **table.tags()}
    if sampling:
        tags["eval/sample_from"] = sampling
    if table.notes:
        tags["eval/notes"] = " | ".join(table.notes)
    client.log_batch(run_id, metrics=[Metric(k, v, ts, 0) for k, v in metrics.items()])
    items = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, tags=items[i: i + 100])
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "eval"
        (d / "audio").mkdir(parents=True)
        table.write(d / "per_sample.json")
        (d / "config.yaml").write_text(dump_yaml(cfg))
        captions = {}
        for variant, out in outputs.items():
            if "alias" in variants[variant]:
                continue
            for i, audio in enumerate(out["audio"][: cfg.eval.audio_samples_logged]):
                name = f"{variant or 'default'}_{i:02d}.wav"
                sf.write(d / "audio" / name, audio, sample_rate, subtype="PCM_16")
                captions[name] = prompts[i]["caption"]
        (d / "audio" / "captions.json").write_text(json.dumps(captions, indent=1))
        client.log_artifacts(run_id, str(d), artifact_path="eval")
    client.set_tag(run_id, "evaluated", "true")
