"""One trial of a sampling search: generate the search's prompts with the trial's sample settings, score them the
way ``arfm evaluate`` scores them, report the objective with the secondary metrics and the cost.

The model is loaded once per worker process (:func:`worker_generator`): the search runs with
``reuse_actors=True``, so one Tune actor runs trial after trial and finds the :class:`~arfm.generate.Generator`
of the previous trial in its process; a search restored in a new Ray session loads it once more per new actor.
Every report carries ``worker_pid`` and ``generator_loads`` (loads in that process so far) so that this can
be checked. What does not change between trials (the prompts with their references, FAD's real set embedded
once by the driver, the evaluation settings) reaches the trials through ``tune.with_parameters``.

Generation and scoring are the evaluation job's own functions (:func:`arfm.evaluate.job.generate_variant`,
:func:`~arfm.evaluate.job.score_metric`, :func:`~arfm.evaluate.job.summarize`): prompt ``i`` has the seed
``train.seed + i`` in every trial and in ``arfm evaluate``. With early stopping the prompts are generated in
slices and each report scores every prompt generated so far (``prompts_scored``, ASHA's time unit); FAD compares
them with the whole real set at each report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

SET_METRICS = ("fad", "fad2")  # compared as sets with one real set; every other metric has one reference per prompt

_GENERATORS: dict[tuple[str, str, str | None], Any] = {}
_LOADS = 0


def worker_generator(source: str, tracking_uri: str, device: str | None) -> Any:
    """The process's :class:`~arfm.generate.Generator` of ``source``, loaded on the first call only."""
    global _LOADS
    key = (str(source), tracking_uri, device)
    if key not in _GENERATORS:
        from arfm.generate import Generator

        _GENERATORS[key] = Generator.load(source, device=device, tracking_uri=tracking_uri)
        _LOADS += 1
    return _GENERATORS[key]


def generator_loads() -> int:
    """How many times this process loaded a model for a trial."""
    return _LOADS


@dataclass
class TrialSetup:
    """What every trial of one search shares (put in Ray's object store once by ``tune.with_parameters``)."""

    source: str
    tracking_uri: str
    device: str | None
    threads: int
    cfg_json: dict[str, Any]  # the evaluation settings of the search (model run's config + the user's layer)
    spec_json: dict[str, Any]  # the SearchSpec, to decode a trial's config
    seconds: float
    sample_rate: int
    prompts: list[dict[str, Any]]
    refs: dict[str, Any]  # metric -> its reference(s), FAD's real set as embeddings
    cfg_eval: dict[str, Any]
    kinds: list[str]
    notes: list[str] = field(default_factory=list)


def objective_value(metrics: dict[str, float], weights: dict[str, float], rows: dict[str, dict[str, Any]]) -> float:
    """The weighted sum of ``eval/<name>`` metrics; a metric the evaluation skipped stops the trial, naming why."""
    total = 0.0
    for name, weight in weights.items():
        key = f"eval/{name}"
        if key not in metrics:
            why = (rows.get(name) or {}).get("skipped") or "not scored"
            raise ValueError(f"objective: metric {name!r} has no value ({why})")
        total += weight * metrics[key]
    return total


def score(setup: TrialSetup, gen: Any, outputs: dict[str, Any], n: int, weights: dict[str, float]) -> dict[str, Any]:
    """The trial's report after ``n`` prompts: objective, ``eval/...`` metrics, their intervals and methods,
    cost (generation seconds and NFE per sample), and which worker produced it."""
    from arfm.evaluate.job import score_metric, summarize

    prompts = setup.prompts[:n]
    captions = [p["caption"] for p in prompts]
    rows: dict[str, dict[str, Any]] = {}
    for kind in setup.kinds:
        refs = setup.refs[kind] if kind in SET_METRICS else setup.refs[kind][:n]
        for row in score_metric(kind, outputs["audio"], refs, captions, setup.sample_rate, setup.cfg_eval):
            rows[row["name"]] = row
    metrics, table = summarize({"": rows}, {"": outputs}, {"": {"sample": {}}}, prompts, list(setup.notes))
    report: dict[str, Any] = {"objective": objective_value(metrics, weights, rows), "prompts_scored": n,
                              "seconds_per_sample": metrics.pop("eval/gen_seconds_per_sample"),
                              "nfe_per_sample": _nfe(gen, metrics, setup.seconds)}
    metrics.pop("eval/nfe", None)
    report.update(metrics)
    for name, row in rows.items():
        if row.get("ci"):
            report[f"ci/{name}_lo"], report[f"ci/{name}_hi"] = (float(x) for x in row["ci"])
    report.update({f"method/{k.removeprefix('eval/').removesuffix('.method')}": v for k, v in table.tags().items()})
    report.update(worker_pid=os.getpid(), generator_loads=generator_loads())
    return report


def _nfe(gen: Any, metrics: dict[str, float], seconds: float) -> float:
    """Network calls per sample (CFG branches run as one batch, one call): FM's solver counts them; an AR model
    makes one call per step of its interleaved sequence (``arfm.models.patterns.n_steps``)."""
    if gen.paradigm == "fm":
        return float(metrics["eval/nfe"])
    from arfm.models.patterns import n_steps

    return float(n_steps(gen.n_frames(seconds), int(gen.meta["n_codebooks"]), gen.model.config.pattern))


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """The function trainable: one report per slice of prompts (one report without early stopping)."""
    import torch
    from ray import tune

    from arfm.config import JobConfig, SampleConfig
    from arfm.evaluate.job import generate_variant
    from arfm.tune.space import SearchSpec

    torch.set_num_threads(max(1, setup.threads))
    gen = worker_generator(setup.source, setup.tracking_uri, setup.device)
    if gen.sample_rate != setup.sample_rate:
        raise ValueError(f"the model loaded on this worker samples at {gen.sample_rate} Hz, the search's prompts "
                         f"at {setup.sample_rate} Hz")
    spec = SearchSpec.model_validate(setup.spec_json)
    base = JobConfig.model_validate(setup.cfg_json)
    sample = SampleConfig.model_validate({**base.sample.model_dump(), **spec.decode(config)})
    cfg = base.model_copy(update={"sample": sample})
    outputs: dict[str, Any] = {"audio": [], "info": [], "seconds": 0.0}
    done = 0
    for end in spec.slices():
        out = generate_variant(gen, setup.prompts[done:end], {"sample": {}}, cfg, setup.seconds, offset=done)
        outputs = {"audio": outputs["audio"] + out["audio"], "info": outputs["info"] + out["info"],
                   "seconds": outputs["seconds"] + out["seconds"]}
        done = end
        tune.report(score(setup, gen, outputs, done, spec.objective.metrics))
