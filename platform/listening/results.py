"""A listening study's results: screening, then n, mean and 95% interval per system and criterion (table 5).

Screening (by the anchor items, see :mod:`arfm.listening.spec`): a rater is kept when the mean of every score
they gave the hidden reference anchors is at least ``anchor_margin`` above the mean of every score they gave the
degraded anchors. A rater who has not yet rated an anchor of both kinds cannot be screened and is left out; a
rater with no judgment at all is not counted. A study without anchors keeps every rater (and says so).

Each cell is the mean of the kept raters' judgments of that system on that criterion, with the 95% t interval
of the mean (:func:`arfm.evaluate.stats.mean_ci`, scipy ``ttest_1samp``), judgments taken as independent
samples, as the paper's "mean ± 95% confidence interval" does; n is the number of judgments. Anchor judgments
never enter a cell. Outputs: ``table5.md``, ``table5.png``, ``results.json`` and ``judgments.csv`` (every
judgment, kept or not, with its rater's screening), logged to MLflow as artifacts ``listening/`` of a run
tagged ``job=listening`` (which ``arfm report`` reads).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arfm.evaluate.stats import T_INTERVAL, Summary, describe, mean_ci
from arfm.listening.store import Store, StudyInfo

ARTIFACT_DIR = "listening"


@dataclass
class RaterScreen:
    rater: int
    judgments: int
    reference_mean: float | None
    degraded_mean: float | None
    kept: bool
    reason: str


@dataclass
class Results:
    study: str
    task: str
    systems: list[str]
    criteria: list[dict[str, str]]
    settings: dict[str, Any]
    cells: dict[tuple[str, str], Summary]
    raters: list[RaterScreen]
    judgments: list[dict[str, Any]] = field(repr=False)

    @property
    def method(self) -> str:
        return (f"{describe(T_INTERVAL)} over the judgments of the raters kept after screening, taken as "
                "independent (scipy.stats)")

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "task": self.task, "systems": self.systems, "criteria": self.criteria,
                "settings": self.settings, "interval_method": self.method,
                "cells": [{"system": s, "criterion": c, **self.cells[(s, c)].to_dict()}
                          for s in self.systems for c in (k["key"] for k in self.criteria)],
                "raters": [asdict(r) for r in self.raters]}


def screen(judgments: list[dict[str, Any]], anchor_margin: float, anchors: bool) -> list[RaterScreen]:
    by: dict[int, list[dict[str, Any]]] = {}
    for j in judgments:
        by.setdefault(j["rater"], []).append(j)
    out = []
    for rater, js in sorted(by.items()):
        ref = [j["score"] for j in js if j["kind"] == "reference"]
        deg = [j["score"] for j in js if j["kind"] == "degraded"]
        rm = float(np.mean(ref)) if ref else None
        dm = float(np.mean(deg)) if deg else None
        if not anchors:
            kept, why = True, "no anchors in this study: not screened"
        elif rm is None or dm is None:
            kept, why = False, "no judgment of a reference and a degraded anchor yet"
        elif rm - dm >= anchor_margin:
            kept, why = True, f"anchors: reference {rm:.2f} - degraded {dm:.2f} >= {anchor_margin:g}"
        else:
            kept, why = False, f"failed the anchors: reference {rm:.2f} - degraded {dm:.2f} < {anchor_margin:g}"
        out.append(RaterScreen(rater, len(js), rm, dm, kept, why))
    return out


def compute(store: Store, study: StudyInfo) -> Results:
    cfg = study.settings
    judgments = store.judgments(study)
    raters = screen(judgments, cfg.anchor_margin, cfg.anchors_per_rater > 0)
    kept = {r.rater for r in raters if r.kept}
    cells = {}
    for s in study.systems:
        for c in cfg.criteria:
            scores = [j["score"] for j in judgments if j["kind"] == "test" and j["system"] == s
                      and j["criterion"] == c.key and j["rater"] in kept]
            cells[(s, c.key)] = mean_ci(scores)
    return Results(study.name, cfg.task, list(study.systems), [c.model_dump() for c in cfg.criteria],
                   cfg.model_dump(mode="json", exclude={"criteria"}), cells, raters, judgments)


def table_markdown(res: Results) -> str:
    import pandas as pd

    kept = [r for r in res.raters if r.kept]
    failed = [r for r in res.raters if not r.kept and r.reason.startswith("failed")]
    unscreened = [r for r in res.raters if not r.kept and not r.reason.startswith("failed")]
    rows = [[c["label"]] + [res.cells[(s, c["key"])].format(2) for s in res.systems] for c in res.criteria]
    table = pd.DataFrame(rows, columns=["Criterion", *res.systems]).to_markdown(index=False, disable_numparse=True)
    title = "inpainting" if res.task == "inpainting" else "quality and text match"
    margin = res.settings.get("anchor_margin")
    screening = (f"Raters: {len(res.raters)} with judgments; kept {len(kept)}; dropped {len(failed)} who failed the "
                 f"anchors (mean score of hidden reference anchors not at least {margin:g} above that of degraded "
                 f"anchors) and {len(unscreened)} not yet screened (no judgment of both anchor kinds)."
                 if res.settings.get("anchors_per_rater") else "Raters: no anchors in this study, every rater kept.")
    lines = [f"## Table 5 — human ratings, {title} (listening study `{res.study}`)", "",
             f"Scores 1-10, higher is better. Each cell: mean ± half-width of the {res.method}; n = judgments "
             f"(raters and clips repeat across judgments). {screening}", "", table, ""]
    lines += ["Criteria as the raters read them:", ""]
    lines += [f"- **{c['label']}**: {c['question']}" for c in res.criteria]
    return "\n".join(lines) + "\n"


def plot(res: Results, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(res.criteria) * max(1, len(res.systems)) / 2, 3.6))
    width = 0.8 / max(1, len(res.systems))
    x = np.arange(len(res.criteria))
    for k, s in enumerate(res.systems):
        cells = [res.cells[(s, c["key"])] for c in res.criteria]
        mean = np.array([c.mean if c.mean is not None else np.nan for c in cells])
        lo = np.array([c.mean - c.lo if c.lo is not None else 0.0 for c in cells])
        hi = np.array([c.hi - c.mean if c.hi is not None else 0.0 for c in cells])
        ax.bar(x + (k - (len(res.systems) - 1) / 2) * width, mean, width, yerr=[lo, hi], capsize=3, label=s)
    ax.set_xticks(x, [c["label"] for c in res.criteria])
    ax.set_ylim(1, 10)
    ax.set_ylabel("score (1-10)")
    ax.set_title(f"{res.study}: mean and 95% t interval")
    ax.legend(fontsize=8, ncol=min(4, len(res.systems)))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


CSV_FIELDS = ["judgment", "rater", "rater_kept", "item", "item_id", "prompt", "clip", "system", "kind", "criterion",
              "score", "time_utc", "play_seconds"]


def judgments_csv(res: Results) -> str:
    kept = {r.rater: r.kept for r in res.raters}
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for j in res.judgments:
        w.writerow({**j, "rater_kept": kept.get(j["rater"], False)})
    return buf.getvalue()


def write_results(res: Results, out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table5.md").write_text(table_markdown(res))
    (out / "results.json").write_text(json.dumps(res.to_dict(), indent=1))
    (out / "judgments.csv").write_text(judgments_csv(res))
    plot(res, out / "table5.png")
    return [out / n for n in ("table5.md", "table5.png", "results.json", "judgments.csv")]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "system"


def log_results(res: Results, out: str | Path, uri: str, experiment: str) -> str:
    """A run tagged ``job=listening`` in ``experiment``: the cells as metrics ``human/<criterion>/<system>``
    (with ``.../n``, ``.../ci_lo``, ``.../ci_hi``), the files of ``out`` as artifacts ``listening/``."""
    from mlflow.entities import Metric

    from arfm import tracking

    client = tracking.client(uri)
    exp_id = tracking.get_or_create_experiment(experiment, uri)
    tags = {"job": "listening", "listening_study": res.study, "listening_task": res.task,
            "listening_interval": res.method, "git_commit": tracking.git_commit()}
    run = client.create_run(exp_id, run_name=f"listening-{res.study}", tags=tags)
    run_id = run.info.run_id
    try:
        metrics, ts = [], int(time.time() * 1000)
        for (s, c), summary in res.cells.items():
            key = f"human/{c}/{_slug(s)}"
            if summary.mean is not None:
                metrics.append(Metric(key, summary.mean, ts, 0))
            metrics.append(Metric(f"{key}/n", float(summary.n), ts, 0))
            if summary.lo is not None:
                metrics += [Metric(f"{key}/ci_lo", summary.lo, ts, 0), Metric(f"{key}/ci_hi", summary.hi, ts, 0)]
        client.log_batch(run_id, metrics=metrics)
        client.log_artifacts(run_id, str(out), ARTIFACT_DIR)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id
