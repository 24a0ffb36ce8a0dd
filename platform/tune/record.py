"""What a finished (or resumed and finished) search records: one row per trial, the best, the parent run.

A trial is *complete* when it scored every prompt of the search; early stopping ends the others, and they are
not candidates for the best (their objective covers fewer prompts). The best is the complete trial with the
lowest (``mode: min``) or highest objective; with ``multi_objective`` the rows also say which complete trials
are Pareto-optimal in (objective, seconds per sample), and the recorded best is still the best objective.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from arfm.tune.space import SearchSpec

BEST_ARTIFACT, TRIALS_ARTIFACT = "tune/best.yaml", "tune/trials.json"
BEST_TRIAL_TAG = "tune/best_trial"


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def objective_interval(spec: SearchSpec, metrics: dict[str, Any]) -> tuple[float, float] | None:
    """The objective's 95% interval when it is one metric with weight 1 (that metric's interval, as the
    evaluation computes it); a weighted sum has none."""
    (name, weight), *rest = spec.objective.metrics.items()
    if rest or weight != 1:
        return None
    lo, hi = _finite(metrics.get(f"ci/{name}_lo")), _finite(metrics.get(f"ci/{name}_hi"))
    return (lo, hi) if lo is not None and hi is not None else None


def collect_trials(results: Any, spec: SearchSpec, uri: str, parent_run_id: str) -> list[dict[str, Any]]:
    """One row per trial of a Tune ``ResultGrid``, in trial order, with its child run."""
    from arfm.tune.runs import trial_runs

    runs = trial_runs(uri, parent_run_id)
    rows = []
    for r in results:
        tid = Path(r.path).name.removeprefix("trial_")
        m = dict(r.metrics or {})
        n = m.get("prompts_scored")
        complete = r.error is None and n == spec.prompts and _finite(m.get("objective")) is not None
        if r.error is not None:
            status = f"error: {type(r.error).__name__}: {str(r.error).strip().splitlines()[-1][:300]}"
        else:
            status = "complete" if complete else (f"stopped early after {n} prompts" if n else "no report")
        rows.append({"trial_id": tid, "run_id": runs.get(tid), "config": dict(r.config),
                     "sample": spec.decode(r.config),
                     "objective": _finite(m.get("objective")), "ci": objective_interval(spec, m),
                     "prompts_scored": n, "seconds_per_sample": _finite(m.get("seconds_per_sample")),
                     "nfe_per_sample": _finite(m.get("nfe_per_sample")), "status": status, "complete": complete,
                     "metrics": {k: _finite(v) for k, v in m.items() if k.startswith("eval/")},
                     "worker_pid": m.get("worker_pid"), "generator_loads": m.get("generator_loads")})
    rows.sort(key=lambda row: row["trial_id"])
    return rows


def best_trial(spec: SearchSpec, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The complete trial with the best objective (first in trial order on a tie); marks Pareto rows when the
    search has two objectives."""
    done = [r for r in rows if r["complete"]]
    if spec.multi_objective:
        sign = 1 if spec.objective.mode == "min" else -1
        for r in done:
            r["pareto"] = not any(sign * o["objective"] <= sign * r["objective"]
                                  and o["seconds_per_sample"] <= r["seconds_per_sample"]
                                  and (o["objective"], o["seconds_per_sample"])
                                  != (r["objective"], r["seconds_per_sample"])
                                  for o in done)
    if not done:
        return None
    pick = min if spec.objective.mode == "min" else max
    return pick(done, key=lambda r: r["objective"])


def record_search(uri: str, parent_run_id: str, spec: SearchSpec, rows: list[dict[str, Any]]) -> dict | None:
    """Best trial, metrics, tags and artifacts on the parent run; the run ends FINISHED (FAILED without a
    complete trial). Returns the best row."""
    from mlflow.entities import Metric

    from arfm import tracking

    best = best_trial(spec, rows)
    c = tracking.client(uri)
    ts = int(time.time() * 1000)
    counts = {"trials": len(rows), "trials_complete": sum(r["complete"] for r in rows),
              "trials_stopped_early": sum(r["status"].startswith("stopped") for r in rows),
              "trials_failed": sum(r["status"].startswith("error") for r in rows)}
    metrics = [Metric(k, float(v), ts, 0) for k, v in counts.items()]
    tags: dict[str, str] = {}
    if best is not None:
        metrics.append(Metric("best_objective", best["objective"], ts, 0))
        tags.update({BEST_TRIAL_TAG: best["trial_id"], "tune/best_run": best["run_id"] or "",
                     "tune/best_sample": json.dumps(best["sample"], sort_keys=True)})
    else:
        errors = [r["status"] for r in rows if r["status"].startswith("error")]
        tags["tune/error"] = errors[0] if errors else "no trial scored every prompt"
    c.log_batch(parent_run_id, metrics=metrics)
    tracking.set_tags(uri, parent_run_id, tags)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "trials.json").write_text(json.dumps(rows, indent=1, default=str))
        c.log_artifact(parent_run_id, str(Path(tmp) / "trials.json"), "tune")
        if best is not None:
            doc = {"sample": best["sample"], "trial_id": best["trial_id"], "run_id": best["run_id"],
                   "objective": {"what": spec.objective.describe(), "value": best["objective"],
                                 "interval_95": list(best["ci"]) if best["ci"] else None,
                                 "prompts": best["prompts_scored"]},
                   "cost": {"seconds_per_sample": best["seconds_per_sample"],
                            "nfe_per_sample": best["nfe_per_sample"]}}
            (Path(tmp) / "best.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            c.log_artifact(parent_run_id, str(Path(tmp) / "best.yaml"), "tune")
    tracking.finish_run(uri, parent_run_id, "FINISHED" if best is not None else "FAILED")
    return best


def _fmt(v: Any, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def trials_table(rows: list[dict[str, Any]], best: dict[str, Any] | None, objective: str = "objective") -> str:
    """A markdown table of a search: trial, one column per searched sample setting, objective with its 95%
    interval, prompts scored, cost, status; the best trial marked ★ (and Pareto-optimal trials ◆ in a
    two-objective search)."""
    import pandas as pd

    best_id = best["trial_id"] if best else None
    settings = list(dict.fromkeys(k for r in rows for k in r["sample"]))
    out = []
    for r in rows:
        ci = f" [{_fmt(r['ci'][0], 4)}, {_fmt(r['ci'][1], 4)}]" if r.get("ci") else ""
        mark = ("★" if r["trial_id"] == best_id else "") + ("◆" if r.get("pareto") else "")
        out.append([mark, r["trial_id"], *(str(r["sample"].get(k, "—")) for k in settings),
                    f"{_fmt(r['objective'], 4)}{ci}", str(r["prompts_scored"] or 0),
                    _fmt(r["seconds_per_sample"]), _fmt(r["nfe_per_sample"]), r["status"]])
    return pd.DataFrame(out, columns=["best", "trial", *settings, objective, "prompts", "s/sample", "NFE/sample",
                                      "status"]).to_markdown(index=False, disable_numparse=True)
