"""The report's sampling searches: one table per search (``arfm tune`` or the grid's tune stage), the best marked.

A search is an MLflow run tagged ``job=tune`` with one child run per trial (:mod:`arfm.tune.runs`); its table
comes from the parent's ``tune/trials.json`` (written when the search finished) and names how each number was
made: the objective and its interval from the trials' ``eval/<metric>.method`` tags, the cost as the search
measured it. Searches and trials are not model runs: the paper's tables leave them out (:func:`is_search`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from arfm.evaluate.runs import RunView

SEARCH_JOBS = ("tune", "tune_trial")
COST = ("s/sample: generation wall time per sample on the trial's worker (prompts generated in batches of "
        "eval.batch_size, scoring excluded); NFE/sample: network calls per sample, the CFG branches of a step in "
        "one call (FM: counted by the solver; AR: the steps of the delay-pattern sequence)")


def is_search(r: RunView) -> bool:
    return r.job in SEARCH_JOBS


def _trials(uri: str, run: RunView) -> tuple[list[dict[str, Any]] | None, str | None]:
    from arfm import tracking
    from arfm.tune.record import TRIALS_ARTIFACT

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = tracking.client(uri).download_artifacts(run.run_id, TRIALS_ARTIFACT, tmp)
            return json.loads(Path(path).read_text()), None
    except Exception as exc:  # noqa: BLE001 - a search killed before its end has no table yet: said so
        return None, f"no {TRIALS_ARTIFACT} ({type(exc).__name__}); the search has not finished (status {run.status})"


def _objective_method(run: RunView, children: list[RunView]) -> str:
    """How the objective's metrics were computed, from a trial's ``eval/<metric>.method`` tags."""
    names = json.loads(run.tags.get("tune/objective_metrics") or "[]")
    for child in children:
        methods = [f"{n}: {child.tags[f'eval/{n}.method']}" for n in names if f"eval/{n}.method" in child.tags]
        if methods:
            return "; ".join(methods)
    return "method not recorded"


def search_section(runs: list[RunView], uri: str) -> str:
    """``## Sampling searches`` with a table per search, newest last."""
    from arfm.tune.record import trials_table

    searches = sorted((r for r in runs if r.job == "tune"), key=lambda r: r.start_time)
    head = "## Sampling searches (appendix D)\n\n"
    if not searches:
        return head + "not run (no sampling search in this experiment)"
    parts = [head + "Each trial generates the same validation prompts with the same seeds and is scored as the "
             "evaluation scores; the best complete trial (every prompt scored) is marked ★ and becomes the model's "
             f"default sampling in the evaluation. {COST}."]
    by_parent: dict[str, list[RunView]] = {}
    for r in runs:
        if r.job == "tune_trial":
            by_parent.setdefault(r.tags.get("mlflow.parentRunId", ""), []).append(r)
    for s in searches:
        t = s.tags
        model = (f"`{t.get('tune/model_run', '')[:8]}` "
                 f"{s.study_cell.removeprefix('tune-') or t.get('tune/model_source', '')}")
        text = [f"### {t.get('tune/search', s.name)} — {s.paradigm.upper()} model {model}", "",
                f"Searcher {t.get('tune/searcher', '?')}, space `{t.get('tune/space', '?')}`; objective "
                f"{t.get('tune/objective', '?')} ({_objective_method(s, by_parent.get(s.run_id, []))}); "
                f"{t.get('tune/prompts', '')}; {t.get('tune/concurrency', '')}. Search run `{s.run_id[:8]}`.", ""]
        rows, why = _trials(uri, s)
        if rows is None:
            text.append(why or "")
        else:
            best = next((r for r in rows if r["trial_id"] == t.get("tune/best_trial")), None)
            text.append(trials_table(rows, best, "objective [95% interval]"))
            if best is None:
                text += ["", f"No best: {t.get('tune/error', 'no trial scored every prompt')}."]
        parts.append("\n".join(text))
    return "\n\n".join(parts)
