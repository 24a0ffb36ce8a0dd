"""A sampling search over one trained model: ``arfm tune --model SOURCE --space ar|fm|FILE.yaml``.

:func:`run_search` resolves the model (a folder, ``runs:/``, ``models:/``, a run id), takes the evaluation's
settings (the model run's config, then the user's ``--set sample.* / eval.*``), the validation prompts and FAD's
real set exactly as ``arfm evaluate`` does (:mod:`arfm.evaluate.job`), embeds that real set once, and runs a
``ray.tune.Tuner`` over the function trainable :func:`arfm.tune.trial.run_trial`:

- searcher: ``BasicVariantGenerator`` for a grid (the paper's spaces), ``OptunaSearch`` (TPE; with
  ``multi_objective`` the objective and the seconds per sample, NSGA-II) for a sampled space;
- scheduler: ``ASHAScheduler`` with ``prompts_scored`` as its time unit when the space asks for early stopping;
- resources: each trial asks for ``resources`` (``tune.with_resources``); by default as many trials run at once
  as the cluster's CPUs (one kept for the driver) and GPUs allow, which is one at a time on 2 CPUs;
- tracking: a parent MLflow run for the search and a child run per trial (:mod:`arfm.tune.runs`);
- resume: the Tune experiment lives in ``<home>/ray_results/tune/<name>`` with the parent run's id beside it;
  ``resume=True`` continues it with ``Tuner.restore`` (finished trials are kept, not run again; Tune saves its
  state after every step, so a killed search loses no finished trial).

At the end the best complete trial (all prompts scored; trials that early stopping ended are not candidates) is
recorded on the parent run (``tune/best.yaml``, ``tune/trials.json``) and attached to the model
(:func:`arfm.tracking.attach_tuned_sampling`), which ``arfm evaluate``, the grid and ``arfm serve`` read back
through :func:`arfm.tracking.tuned_sampling`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from arfm.config import ConfigError, JobConfig
from arfm.tune.space import SearchSpec, load_spec, spec_from_dict

STATE_FILE = "arfm_search.json"
# what each objective or secondary metric is scored by (aesthetics' four axes come from one task)
SCORED_BY = {"fad": "fad", "fad2": "fad2", "clap": "clap", "chord_iou": "chord_iou", "beat_f1": "beat_f1",
             "melody_sim": "melody_sim", "pq": "aesthetics", "pc": "aesthetics", "ce": "aesthetics",
             "cu": "aesthetics"}


@dataclass
class SearchResult:
    name: str
    path: Path
    parent_run_id: str
    uri: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    concurrency: str
    attached_to: str | None = None
    notes: list[str] = field(default_factory=list)


def search_path(name: str) -> Path:
    """Where the Tune experiment of search ``name`` lives (its state, and the parent run's id beside it)."""
    from arfm import tracking

    return tracking.home() / "ray_results" / "tune" / name


def _trial_dirname(trial) -> str:  # module level: Tune pickles the config that holds it
    return f"trial_{trial.trial_id}"


def default_concurrency(spec: SearchSpec) -> tuple[int, str]:
    """How many trials run at once, and a sentence saying why."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 1)), float(total.get("GPU", 0))
    res = spec.resources
    limits = [max(1, int((cpus - 1) // res.cpu))]
    if res.gpu:
        limits.append(int(gpus // res.gpu))
    n = max(1, min(limits + ([spec.max_concurrent] if spec.max_concurrent else [])))
    ask = f"{res.cpu:g} CPU" + (f" and {res.gpu:g} GPU" if res.gpu else "")
    why = (f"{n} trial{'s' if n > 1 else ''} at a time: the cluster has {cpus:g} CPUs" +
           (f" and {gpus:g} GPUs" if gpus else "") + f", each trial asks for {ask}, one CPU stays with the driver"
           + (f", at most {spec.max_concurrent} asked" if spec.max_concurrent else ""))
    return n, why


def _read_model(source: str, uri: str) -> tuple[JobConfig, dict[str, Any]]:
    """The saved model's config and metadata, without building it (the trials load the model)."""
    from arfm.generate import resolve_source
    from arfm.modeling import CONFIG_FILE, META_FILE

    folder = resolve_source(source, uri)
    cfg = JobConfig.model_validate(yaml.safe_load((folder / CONFIG_FILE).read_text()))
    return cfg, json.loads((folder / META_FILE).read_text())


def _prepare(spec: SearchSpec, eval_cfg: JobConfig, sample_rate: int, notes: list[str]) -> dict[str, Any]:
    """Prompts, references (FAD's real set embedded once) and the metrics to score, as ``arfm evaluate``."""
    from arfm.evaluate.job import embed_reference, eval_settings, load_background, load_prompts, metric_references

    seconds = float(eval_cfg.sample.seconds or eval_cfg.data.segment_seconds)
    prompts = load_prompts(eval_cfg, spec.prompts, seconds, sample_rate, notes)
    if len(prompts) < spec.prompts:
        if spec.early_stopping and spec.early_stopping.slice >= len(prompts):
            raise ConfigError(f"early_stopping.slice ({spec.early_stopping.slice}) needs more than the "
                              f"{len(prompts)} prompts available")
        spec.prompts = len(prompts)
    background = load_background(eval_cfg, seconds, sample_rate, {p["id"] for p in prompts}, notes)
    refs = metric_references(prompts, background, second_fad=bool(eval_cfg.eval.fad_second))
    names = list(dict.fromkeys([*spec.objective.metrics, *spec.metrics]))
    unscorable = [n for n in names if n not in SCORED_BY]
    if unscorable:
        raise ConfigError(f"metrics: {unscorable} are not scored on generated audio; choose from "
                          f"{', '.join(SCORED_BY)}")
    kinds = list(dict.fromkeys(SCORED_BY[n] for n in names))
    missing = [k for k in kinds if k not in refs]
    if missing:
        raise ConfigError(f"metrics: {missing} need what the prompts lack (reference audio or eval.fad_second); "
                          f"the prompts are {eval_cfg.eval.prompts!r}")
    for kind, model in (("fad", eval_cfg.eval.fad_model), ("fad2", eval_cfg.eval.fad_second)):
        if kind in kinds:
            refs[kind] = embed_reference(model, refs[kind], sample_rate)
    return {"seconds": seconds, "prompts": prompts, "refs": {k: refs[k] for k in kinds}, "kinds": kinds,
            "cfg_eval": eval_settings(eval_cfg, background)}


def _searcher_and_scheduler(spec: SearchSpec, concurrency: int):
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    mode = spec.objective.mode
    if spec.searcher == "grid":
        searcher = BasicVariantGenerator(max_concurrent=concurrency)
    else:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        if spec.multi_objective:
            searcher = OptunaSearch(metric=["objective", "seconds_per_sample"], mode=[mode, "min"],
                                    sampler=optuna.samplers.NSGAIISampler(seed=spec.seed))
        else:
            searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=spec.seed))
        searcher = ConcurrencyLimiter(searcher, max_concurrent=concurrency)
    scheduler = None
    if spec.early_stopping:
        es = spec.early_stopping
        kw = {"metric": "objective", "mode": mode} if spec.multi_objective else {}
        scheduler = ASHAScheduler(time_attr="prompts_scored", max_t=spec.prompts, grace_period=es.slice,
                                  reduction_factor=es.reduction_factor, **kw)
    return searcher, scheduler


def run_search(source: str, space: str | Path | SearchSpec | dict, *, layer: dict[str, Any] | None = None,
               tracking_uri: str | None = None, name: str | None = None, resume: bool = False,
               attach: bool = True, study_cell: str | None = None, prefix: str = "",
               say: Callable[[str], None] = print) -> SearchResult:
    """Run (or with ``resume`` continue) a sampling search over the model ``source``; see the module docstring.
    ``layer``: the user's ``sample`` / ``eval`` / ``tracking`` settings (:func:`arfm.evaluate.job.user_layer`)."""
    import ray
    from ray import tune

    from arfm import tracking
    from arfm.config import deep_merge
    from arfm.evaluate.job import evaluation_config
    from arfm.tune.record import collect_trials, record_search
    from arfm.tune.runs import SEARCH_JOB, TrialRuns
    from arfm.tune.trial import TrialSetup, run_trial

    spec = space if isinstance(space, SearchSpec) else (
        spec_from_dict(space) if isinstance(space, dict) else load_spec(space))
    spec = spec.model_copy(deep=True)
    layer = layer or {}
    uri = tracking_uri or tracking.tracking_uri(JobConfig.model_validate({"tracking": layer.get("tracking", {})}))
    source = str(source)
    model_run = tracking.model_run_id(source, uri)
    version = tracking.registered_version(uri, source) if source.startswith("models:/") else None
    run_cfg, meta = _read_model(source, uri)
    # the search's runs go to the store the model was found in (the saved config names the store it was
    # trained with, which need not be this one)
    eval_cfg = evaluation_config(run_cfg, deep_merge(layer, {"tracking": {"uri": uri}}))
    paradigm = run_cfg.model.paradigm
    spec.check_sample(eval_cfg.sample, paradigm)
    sample_rate = int(meta.get("sample_rate") or run_cfg.data.sample_rate)
    notes: list[str] = []
    shared = _prepare(spec, eval_cfg, sample_rate, notes)

    name = name or f"{spec.name}-{model_run[:8] if model_run else Path(source).name}"
    path = search_path(name)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    concurrency, why = default_concurrency(spec)
    say(f"{prefix}search {name}: {spec.grid_size() or spec.num_samples} trial(s) of {spec.prompts} prompts; {why}")
    setup = TrialSetup(source=source, tracking_uri=uri, device="cuda" if spec.resources.gpu else "cpu",
                       threads=max(1, int(spec.resources.cpu)), cfg_json=eval_cfg.model_dump(mode="json"),
                       spec_json=spec.model_dump(mode="json"), sample_rate=sample_rate, notes=notes, **shared)
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    if resume:
        parent = _resume(path, uri)
        tuner = tune.Tuner.restore(str(path), trainable=trainable)
    else:
        if path.exists():
            raise ConfigError(f"a search named {name!r} exists at {path}: continue it with --resume, or give "
                              "another --name")
        cell_cfg = eval_cfg.model_copy(update={"study_cell": study_cell or ""})
        tags = {"tune/search": name, "tune/space": spec.name, "tune/searcher": spec.searcher,
                "tune/objective": spec.objective.describe(),
                "tune/objective_metrics": json.dumps(list(spec.objective.metrics)), "tune/model_source": source,
                "tune/model_run": model_run or "", "tune/prompts": f"{spec.prompts} prompts of "
                f"{eval_cfg.eval.prompts}, seeds train.seed + i ({eval_cfg.train.seed} ...)",
                "tune/concurrency": why}
        _, parent = tracking.start_run(cell_cfg, SEARCH_JOB, paradigm, tags, run_name=name)
        _log_space(uri, parent, spec)
        path.mkdir(parents=True)
        (path / STATE_FILE).write_text(json.dumps({"parent_run_id": parent, "uri": uri, "source": source}))
        searcher, scheduler = _searcher_and_scheduler(spec, concurrency)
        child_tags = tracking.run_tags(cell_cfg, "tune_trial", paradigm, {"tune/search": name})
        tuner = tune.Tuner(
            trainable, param_space=spec.param_space(),
            tune_config=tune.TuneConfig(
                metric=None if spec.multi_objective else "objective",
                mode=None if spec.multi_objective else spec.objective.mode, search_alg=searcher,
                scheduler=scheduler, num_samples=spec.num_samples, reuse_actors=True,
                trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=str(path.parent), verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
                callbacks=[TrialRuns(uri, parent, child_tags, spec.model_dump(mode="json"), spec.grid_size(),
                                     prefix=f"{prefix}{name}: ")]))
    # TUNE_GLOBAL_CHECKPOINT_S=0: the experiment state after every step, so a kill loses no trial.
    # RAY_AIR_NEW_OUTPUT=0: Tune's newer console output prints its configuration box and result paths even at
    # verbose=0; the classic reporter prints nothing there, and TrialRuns writes the one line per trial.
    env = {"TUNE_GLOBAL_CHECKPOINT_S": "0", "RAY_AIR_NEW_OUTPUT": "0"}
    previous = {k: os.environ.get(k) for k in env}
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    os.environ.update(env)
    tune_log.setLevel(logging.WARNING)  # its INFO lines ("Wrote the latest version of all result files ...")
    try:
        results = tuner.fit()
    except BaseException:
        tracking.finish_run(uri, parent, "KILLED")
        raise
    finally:
        tune_log.setLevel(level)
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    trials = collect_trials(results, spec, uri, parent)
    best = record_search(uri, parent, spec, trials)
    result = SearchResult(name=name, path=path, parent_run_id=parent, uri=uri, trials=trials, best=best,
                          concurrency=why, notes=notes)
    if best and attach and model_run:
        found = (f"search run {parent} ({name}), trial {best['trial_id']}: {spec.objective.describe()} = "
                 f"{best['objective']:.4g} on {best['prompts_scored']} prompts")
        tracking.attach_tuned_sampling(uri, model_run, best["sample"], found, version)
        result.attached_to = model_run
    return result


def _resume(path: Path, uri: str) -> str:
    from ray import tune

    from arfm import tracking

    state = path / STATE_FILE
    if not state.is_file() or not tune.Tuner.can_restore(str(path)):
        raise ConfigError(f"--resume: no search to continue at {path} (start it without --resume)")
    parent = json.loads(state.read_text())["parent_run_id"]
    tracking.client(uri).update_run(parent, status="RUNNING")
    return parent


def _log_space(uri: str, run_id: str, spec: SearchSpec) -> None:
    from arfm import tracking

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "space.yaml"
        p.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        tracking.client(uri).log_artifact(run_id, str(p), "tune")
