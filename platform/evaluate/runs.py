"""Runs of an MLflow experiment as the report sees them: axes from tags/params, values with n and 95% CI.

A run's axes come from the contract's tags (``paradigm``, ``job``, ``frame_rate``, ``study_cell``,
``conditioning``, ``latent``); duration and batch size from the study-cell name written by
:mod:`arfm.study` (``fm-50hz-10s-b256-text``) or else the params ``data.segment_seconds`` and
``train.batch_size``. A value (:meth:`RunView.stat`) comes from ``eval/per_sample.json`` when the run has one
(mean with a 95% t interval and its n; FAD with its two-set basic bootstrap interval), else from the
``eval/<key>`` metric (no interval), else it is "skipped" (with the reason the evaluation recorded) or missing.
The method (estimator, embedding, reference) comes from the file or from the run's ``eval/<key>.method`` tag.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arfm.evaluate.per_sample import ARTIFACT_PATH, read_per_sample
from arfm.evaluate.stats import SET_BOOTSTRAP, Summary, mean_ci


class ReportError(RuntimeError):
    pass


@dataclass
class Stat:
    """A value as the report shows it: the summary (value, interval and how it was computed), the estimator /
    embedding / reference that produced it (``method``), and why it is missing or why a fallback was used."""

    summary: Summary | None = None
    skipped: str | None = None
    method: str | None = None
    fallback: str | None = None


@dataclass
class RunView:
    run_id: str
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int = 0
    status: str = "FINISHED"
    per_sample: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ axes
    @property
    def paradigm(self) -> str:
        return self.tags.get("paradigm", "")

    @property
    def job(self) -> str:
        return self.tags.get("job", "")

    @property
    def baseline(self) -> str:
        """``reference`` | ``codec_latent`` | ``codec_tokens`` | ``untrained`` for a ceiling or floor run, else ""."""
        return self.tags.get("baseline", "") if self.job == "baseline" else ""

    @property
    def latent(self) -> str:
        return self.tags.get("latent") or "encodec"

    @property
    def conditioning(self) -> str:
        return self.tags.get("conditioning") or "text"

    @property
    def study_cell(self) -> str:
        return self.tags.get("study_cell", "")

    @property
    def frame_rate(self) -> int | None:
        return _int(self.tags.get("frame_rate") or self.params.get("codec.frame_rate"))

    @property
    def duration(self) -> float | None:
        m = re.search(r"-(\d+(?:\.\d+)?)s-", self.study_cell)
        if m:
            return float(m.group(1))
        return _float(self.params.get("data.segment_seconds") or self.params.get("sample.seconds"))

    @property
    def batch_size(self) -> int | None:
        m = re.search(r"-b(\d+)-", self.study_cell)
        if m:
            return int(m.group(1))
        return _int(self.params.get("train.batch_size"))

    @property
    def model_label(self) -> str:
        if self.paradigm == "ar":
            return "AR"
        if self.paradigm == "fm":
            return "FM (VAE)" if self.latent == "vae" else "FM (EnC)"
        return self.paradigm.upper() or "?"

    @property
    def evaluated(self) -> bool:
        return self.per_sample is not None or any(k.startswith("eval/") for k in self.metrics)

    @property
    def n(self) -> int | None:
        if self.per_sample is not None:
            return int(self.per_sample.get("n") or 0)
        return _int(self.metrics.get("eval/n_samples") or self.metrics.get("eval/n")
                    or self.params.get("eval.n_samples"))

    def variants(self, prefix: str) -> set[str]:
        """Variant names starting with ``prefix`` found in the metrics or per-sample file (``euler10`` ...)."""
        keys = [k[5:] for k in self.metrics if k.startswith("eval/")]
        if self.per_sample:
            keys += list(self.per_sample["per_sample"]) + list(self.per_sample["set"])
        return {k.split("/")[0] for k in keys if "/" in k and k.startswith(prefix)}

    # ------------------------------------------------------------------ values
    def stat(self, key: str) -> Stat:
        """The value of ``key`` (``"clap"``, ``"euler10/fad"``) with n and 95% CI, or why it is absent."""
        ps = self.per_sample
        tag = self.tags.get(f"eval/{key}.method", "")
        method = (ps or {}).get("methods", {}).get(key) or (tag.split("; ")[0] if tag else None)
        fallback = (ps or {}).get("fallbacks", {}).get(key)
        if ps is not None:
            if key in ps["per_sample"]:
                return Stat(mean_ci(ps["per_sample"][key]), method=method, fallback=fallback)
            if key in ps["set"]:
                e = ps["set"][key]
                ci = e.get("ci") or (None, None)
                how = SET_BOOTSTRAP if ci[0] is not None else "none"
                return Stat(Summary(e.get("value"), ci[0], ci[1], int(e.get("n") or 0), method=how),
                            method=method or e.get("model"), fallback=fallback)
        mk = f"eval/{key}"
        if mk in self.metrics:
            return Stat(Summary(self.metrics[mk], None, None, self.n or 0, method="none"), method=method,
                        fallback=fallback)
        if ps is not None and key in ps["skipped"]:
            return Stat(skipped=ps["skipped"][key], method=method)
        return Stat()

    def first_stat(self, *keys: str) -> Stat:
        for k in keys:
            s = self.stat(k)
            if s.summary is not None or s.skipped:
                return s
        return Stat()


def _int(v: Any) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def collect_runs(experiment: str, uri: str) -> list[RunView]:
    """Every run of ``experiment`` except report and listening-results runs, newest first, with its per-sample
    file when logged."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ReportError(f"no MLflow experiment {experiment!r} at {uri}; experiments there: "
                          f"{', '.join(names) or 'none'}")
    runs: list[RunView] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token,
                                  order_by=["attributes.start_time DESC"])
        for r in page:
            if r.data.tags.get("job") in ("report", "listening"):  # outputs, not runs of the grid
                continue
            view = RunView(run_id=r.info.run_id, name=r.info.run_name or r.info.run_id[:8], tags=dict(r.data.tags),
                           params=dict(r.data.params), metrics=dict(r.data.metrics),
                           start_time=int(r.info.start_time or 0), status=r.info.status)
            view.per_sample, error = _download_per_sample(client, r.info.run_id)
            if error:
                view.extra["per_sample_error"] = error
            runs.append(view)
        token = page.token
        if not token:
            break
    return runs


ENTROPY_PATH = "eval/entropy.json"  # {"per_prompt": [[H_0, H_1, ...], ...]}, when not inside per_sample.json


def _download_per_sample(client: Any, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The run's ``eval/per_sample.json`` (or None when it logged none) and, when it exists but cannot be read,
    why: the report then shows the run's metrics without intervals and says so."""
    folder = ARTIFACT_PATH.rsplit("/", 1)[0]
    try:
        listed = [a.path for a in client.list_artifacts(run_id, folder)]
    except Exception:  # noqa: BLE001 - no artifact store, or nothing logged: no file to read
        return None, None
    if ARTIFACT_PATH not in listed:
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            doc = read_per_sample(client.download_artifacts(run_id, ARTIFACT_PATH, tmp))
        except Exception as exc:  # noqa: BLE001 - a broken file must not stop the report, but is reported
            return None, f"{ARTIFACT_PATH} could not be read ({type(exc).__name__}: {exc})"
        if not doc.get("entropy") and ENTROPY_PATH in listed:
            try:
                ent = json.loads(Path(client.download_artifacts(run_id, ENTROPY_PATH, tmp)).read_text())
            except Exception as exc:  # noqa: BLE001
                doc["notes"] = list(doc.get("notes") or []) + [
                    f"{ENTROPY_PATH} could not be read ({type(exc).__name__}: {exc})"]
            else:
                if ent.get("per_prompt"):
                    doc["entropy"] = {"": ent["per_prompt"]}
        return doc, None


def latest(runs: list[RunView]) -> RunView | None:
    """The newest evaluated run, else the newest run."""
    if not runs:
        return None
    ev = [r for r in runs if r.evaluated]
    pool = ev or runs
    return max(pool, key=lambda r: r.start_time)
