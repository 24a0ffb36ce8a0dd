"""MLflow for a sampling search: one parent run per search, one child run per trial, and the trial-to-run map.

:class:`TrialRuns` is a Ray Tune ``LoggerCallback`` (it runs in the driver): at a trial's start it creates the
trial's child run (tags ``mlflow.parentRunId``, ``tune/trial_id``, ``job=tune_trial`` and the contract's tags;
params: the trial's sample settings), logs every report as metrics at step ``prompts_scored`` (the methods as
``eval/<metric>.method`` tags), and ends the run FINISHED or FAILED with the trial. The trial-to-run map is
MLflow itself: a child run is found again by its parent and ``tune/trial_id`` (:func:`trial_runs`), so a
restored search (``Tuner.restore``; the callback is restored with it) attaches its trials to the child runs they
had. Ray's own ``MLflowLoggerCallback`` keeps that map in memory only (a restored search would make a second run
per trial) and sets the process-wide tracking URI; this one talks to the store through explicit clients.
"""

from __future__ import annotations

import json
import numbers
import time
from typing import Any

from ray.tune.logger import LoggerCallback

from arfm import tracking

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "tune/trial_id"
TRIAL_JOB, SEARCH_JOB = "tune_trial", "tune"


@tracking._retrying
def trial_runs(uri: str, parent_run_id: str) -> dict[str, str]:
    """``{trial id: child run id}`` of a search's parent run (the oldest child when a trial had several)."""
    c = tracking.client(uri)
    exp = c.get_run(parent_run_id).info.experiment_id
    out: dict[str, str] = {}
    token = None
    while True:
        page = c.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                             order_by=["attributes.start_time ASC"], max_results=1000, page_token=token)
        for r in page:
            out.setdefault(r.data.tags.get(TRIAL_TAG, ""), r.info.run_id)
        token = page.token
        if not token:
            return {k: v for k, v in out.items() if k}


class TrialRuns(LoggerCallback):
    """Child runs of ``parent_run_id`` for the trials of a search (see the module docstring)."""

    def __init__(self, uri: str, parent_run_id: str, tags: dict[str, str], spec_json: dict[str, Any],
                 total: int | None = None, prefix: str = "") -> None:
        self.uri, self.parent, self.tags, self.spec_json = uri, parent_run_id, dict(tags), spec_json
        self.total, self.prefix = total, prefix
        self._runs: dict[str, str] | None = None
        self._ended = 0

    def __getstate__(self) -> dict[str, Any]:  # pickled with the experiment: the map is read again from MLflow
        return {**self.__dict__, "_runs": None, "_ended": 0}

    def setup(self, *args, **kwargs) -> None:
        self._runs = trial_runs(self.uri, self.parent)
        self._ended = 0

    def _map(self) -> dict[str, str]:
        if self._runs is None:
            self._runs = trial_runs(self.uri, self.parent)
        return self._runs

    def log_trial_start(self, trial) -> None:
        from arfm.tune.space import SearchSpec

        runs = self._map()
        run_id = runs.get(trial.trial_id)
        c = tracking.client(self.uri)
        if run_id is None:
            exp = c.get_run(self.parent).info.experiment_id
            tags = {**self.tags, PARENT_TAG: self.parent, TRIAL_TAG: trial.trial_id, "job": TRIAL_JOB,
                    "mlflow.runName": f"{self.tags.get('tune/search', 'search')}-{trial.trial_id}"}
            run_id = c.create_run(exp, tags=tags, run_name=tags["mlflow.runName"]).info.run_id
            runs[trial.trial_id] = run_id
            sample = SearchSpec.model_validate(self.spec_json).decode(trial.config)
            params = {f"sample.{k}": v for k, v in sample.items()}
            params.update({f"space.{k}": v for k, v in trial.config.items()})
            tracking.log_params(self.uri, run_id, {k: str(v) for k, v in params.items()})
        else:  # a restored search: the trial's run goes on (a trial that had not finished starts over)
            c.update_run(run_id, status="RUNNING")

    def log_trial_result(self, iteration: int, trial, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        run_id = self._map()[trial.trial_id]
        step = int(result.get("prompts_scored") or iteration)
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in result.items() if _is_metric(k, v)]
        tracking.client(self.uri).log_batch(run_id, metrics=metrics)
        methods = {f"eval/{k.removeprefix('method/')}.method": str(v) for k, v in result.items()
                   if k.startswith("method/")}
        if methods:
            tracking.set_tags(self.uri, run_id, methods)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        run_id = self._map()[trial.trial_id]
        last = trial.last_result or {}
        tags = {"tune/prompts_scored": str(last.get("prompts_scored", 0))}
        if failed and trial.error_file:
            tags["tune/error"] = _error_text(trial)
        tracking.set_tags(self.uri, run_id, tags)
        tracking.finish_run(self.uri, run_id, "FAILED" if failed else "FINISHED")
        self._ended += 1
        what = "failed" if failed else (f"objective {last['objective']:.4g} on {last.get('prompts_scored')} prompts, "
                                        f"{last.get('seconds_per_sample', float('nan')):.3g} s/sample"
                                        if "objective" in last else "ended without a report")
        from arfm.tune.space import SearchSpec

        sample = SearchSpec.model_validate(self.spec_json).decode(trial.config)
        settings = ", ".join(f"{k}={v}" for k, v in sample.items())
        of = f"/{self.total}" if self.total else ""
        print(f"{self.prefix}trial {self._ended}{of} ({settings}): {what}", flush=True)


def _is_metric(key: str, value: Any) -> bool:
    """Numbers of the trial's own report; Tune's bookkeeping (iterations, time, pid ...) stays in Tune."""
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return False
    return key in ("objective", "prompts_scored", "seconds_per_sample", "nfe_per_sample", "worker_pid",
                   "generator_loads") or key.startswith(("eval/", "ci/"))


def _error_text(trial) -> str:
    try:
        with open(trial.error_file) as f:
            return f.read()[-2000:]
    except OSError:
        return json.dumps({"error_file": trial.error_file})
