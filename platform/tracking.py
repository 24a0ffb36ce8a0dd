"""MLflow tracking for every job: where the store is, one run per job, its tags, params, metrics and model.

Store: ``cfg.tracking.uri`` if set, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<home>/mlflow.db`` with
artifacts under ``<home>/mlartifacts`` (home = ``$ARFM_HOME`` or ``./runs``), so ``mlflow ui --backend-store-uri
sqlite:///runs/mlflow.db`` works offline.

Who writes: the driver creates (or reopens) the run, logs the tags and the whole resolved config as params, and
passes ``run_id`` and the URI to the Ray Train workers; only world rank 0 logs step metrics (through
:class:`MetricLogger`, which retries when SQLite is briefly locked). The driver logs the final model directory as
artifact path ``model`` and registers it. A SQLite file only works when every process is on the same machine
(the default: one node, driver and workers share the disk). On a multi-node cluster point ``MLFLOW_TRACKING_URI``
(or ``tracking.uri``) at an MLflow server, e.g. ``mlflow server --backend-store-uri sqlite:///runs/mlflow.db
--artifacts-destination runs/mlartifacts --host 0.0.0.0``, which every node can reach.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

# arfm's jobs download artifacts many at a time (the report reads every run's evaluation): no per-file bar
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.tracking import MlflowClient

    from arfm.config import JobConfig

MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_KEY = 250
MAX_TAG_VALUE = 8000
BATCH = 100  # params/tags per log_batch request
REQUIRED_TAGS = ("paradigm", "job", "frame_rate", "study_cell", "conditioning", "latent", "preset", "git_commit")


def _retrying(fn):
    """Retry a store call while SQLite reports ``database is locked`` (several jobs on one machine)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        delay = 0.1
        for attempt in range(10):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - sqlalchemy OperationalError arrives wrapped by MLflow
                if "locked" not in str(exc).lower() or attempt == 9:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 3.0)

    return wrapper


def home() -> Path:
    """The project's output root: ``$ARFM_HOME`` or ``./runs`` (absolute)."""
    return Path(os.environ.get("ARFM_HOME") or "runs").expanduser().resolve()


def tracking_uri(cfg: "JobConfig | None" = None) -> str:
    """``cfg.tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite store under :func:`home`."""
    if cfg is not None and cfg.tracking.uri:
        return _absolute_sqlite(cfg.tracking.uri)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return _absolute_sqlite(os.environ["MLFLOW_TRACKING_URI"])
    root = home()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments: ``<home>/mlartifacts`` for a local store, the server's default else."""
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        path = home() / "mlartifacts"
        path.mkdir(parents=True, exist_ok=True)
        return path.as_uri()
    return None


def _absolute_sqlite(uri: str) -> str:
    # sqlite:///relative.db depends on the cwd of every process; make it absolute once, on the driver.
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def client(uri: str) -> "MlflowClient":
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@_retrying
def get_or_create_experiment(name: str, uri: str | None = None) -> str:
    """The experiment id for ``name``, creating it (artifacts under ``<home>/mlartifacts``) if needed."""
    uri = uri or tracking_uri()
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_root(uri))
    except Exception:  # another process created it between the two calls
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the project, or ``"unknown"`` (no git, no commits, not a checkout)."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else "unknown"


def conditioning(cfg: "JobConfig") -> str:
    if cfg.model.inpainting != "none":
        return "inpainting"
    return "controls" if cfg.model.controls else "text"


def run_tags(cfg: "JobConfig", job: str, paradigm: str, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The contract's tags (paradigm, job, frame_rate, study_cell, conditioning, latent, preset, git_commit)."""
    tags: dict[str, Any] = {
        "paradigm": paradigm,
        "job": job,
        "frame_rate": cfg.codec.frame_rate,
        "study_cell": cfg.study_cell or "",
        "conditioning": conditioning(cfg),
        "latent": cfg.model.representation,
        "representation": cfg.model.representation,
        "preset": cfg.preset,
        "git_commit": git_commit(),
    }
    tags.update(extra or {})
    return {str(k)[:MAX_KEY]: _text(v, MAX_TAG_VALUE) for k, v in tags.items()}


def _text(value: Any, limit: int) -> str:
    s = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def config_params(cfg: "JobConfig") -> dict[str, str]:
    """``cfg.flat()`` as MLflow params: JSON for lists/None, cut to MLflow's 6000-character value limit."""
    return {k[:MAX_KEY]: _text(v, MAX_PARAM_VALUE) for k, v in cfg.flat().items()}


@_retrying
def log_params(uri: str, run_id: str, params: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Log params not already on the run; return ``{key: (old, new)}`` for those that differ (MLflow params are
    immutable, so a resumed run with changed settings keeps the old value and records the change as a tag)."""
    from mlflow.entities import Param

    c = client(uri)
    have = c.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in have]
    for i in range(0, len(new), BATCH):
        c.log_batch(run_id, params=new[i : i + BATCH])
    return {k: (have[k], v) for k, v in params.items() if k in have and have[k] != v}


@_retrying
def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, _text(v, MAX_TAG_VALUE)) for k, v in tags.items()]
    c = client(uri)
    for i in range(0, len(items), BATCH):
        c.log_batch(run_id, tags=items[i : i + BATCH])


@_retrying
def start_run(
    cfg: "JobConfig", job: str, paradigm: str, tags: Mapping[str, Any] | None = None, run_name: str | None = None
) -> tuple[str, str]:
    """Create a RUNNING run in ``cfg.tracking.experiment`` with the tags and all params; return (uri, run_id)."""
    uri = tracking_uri(cfg)
    exp_id = get_or_create_experiment(cfg.tracking.experiment, uri)
    all_tags = run_tags(cfg, job, paradigm, tags)
    if run_name:
        all_tags["mlflow.runName"] = run_name
    run = client(uri).create_run(exp_id, tags=all_tags, run_name=run_name)
    log_params(uri, run.info.run_id, config_params(cfg))
    return uri, run.info.run_id


@_retrying
def resume_run(cfg: "JobConfig", run_id: str, tags: Mapping[str, Any] | None = None) -> str:
    """Reopen ``run_id`` (status RUNNING), add params that are new, record changed ones; return the URI."""
    uri = tracking_uri(cfg)
    c = client(uri)
    c.get_run(run_id)  # raises a clear MlflowException if it does not exist
    c.update_run(run_id, status="RUNNING")
    changed = log_params(uri, run_id, config_params(cfg))
    extra = dict(tags or {})
    if changed:
        extra["resumed_with_changes"] = json.dumps({k: new for k, (_, new) in changed.items()}, sort_keys=True)
    if extra:
        set_tags(uri, run_id, extra)
    return uri


@_retrying
def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status=status)


@_retrying
def find_run(uri: str, experiment: str, tag: str, value: str) -> str | None:
    """The newest run of ``experiment`` whose tag ``tag`` equals ``value`` (any status), or None."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.{tag} = '{_quote(value)}'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def _quote(value: str) -> str:
    return str(value).replace("'", "\\'")


@_retrying
def find_finished_run(experiment: str, study_cell: str, uri: str | None = None, job: str | None = None
                      ) -> str | None:
    """The run id of the newest FINISHED run of ``experiment`` tagged ``study_cell`` (and ``job`` if given), or
    None. The grid calls this to skip cells that are already done."""
    uri = uri or tracking_uri()
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    flt = f"tags.study_cell = '{_quote(study_cell)}' and attributes.status = 'FINISHED'"
    if job:
        flt += f" and tags.job = '{_quote(job)}'"
    runs = c.search_runs([exp.experiment_id], filter_string=flt, order_by=["attributes.start_time DESC"],
                         max_results=1)
    return runs[0].info.run_id if runs else None


@_retrying
def log_model_dir(uri: str, run_id: str, local_dir: str | Path, artifact_path: str = "model") -> str:
    """Upload a finished model directory (config.yaml, weights.pt, meta.json) as ``artifact_path``."""
    c = client(uri)
    c.log_artifacts(run_id, str(local_dir), artifact_path)
    return f"{c.get_run(run_id).info.artifact_uri}/{artifact_path}"


@_retrying
def log_file(uri: str, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Upload one file (e.g. the fine-tuning report ``init_from.json``) as an artifact of the run."""
    client(uri).log_artifact(run_id, str(path), artifact_path)


@_retrying
def register_model(uri: str, run_id: str, name: str, artifact_path: str = "model") -> str:
    """Register ``runs:/<run_id>/<artifact_path>`` under ``name`` (e.g. ``arfm-ar``); return the version."""
    c = client(uri)
    try:
        c.create_registered_model(name)
    except Exception:  # already exists (RESOURCE_ALREADY_EXISTS)
        pass
    source = f"{c.get_run(run_id).info.artifact_uri}/{artifact_path}"
    mv = c.create_model_version(name, source=source, run_id=run_id, tags={"run_id": run_id})
    return str(mv.version)


def registered_name(paradigm: str) -> str:
    return f"arfm-{paradigm}"


class MetricLogger:
    """Step metrics from the rank-0 worker: batched ``log_batch`` with retries (SQLite may be briefly locked by
    another process on the same machine). Failures to log never stop training; they are counted instead."""

    def __init__(self, uri: str, run_id: str, retries: int = 5):
        self.uri, self.run_id, self.retries = uri, run_id, retries
        self.failures = 0
        self._client = client(uri)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k[:MAX_KEY], float(v), now, int(step)) for k, v in metrics.items() if _numeric(v)]
        for i in range(0, len(items), 1000):
            self._send(items[i : i + 1000])

    def _send(self, items: Iterable) -> None:
        delay = 0.2
        for attempt in range(self.retries):
            try:
                self._client.log_batch(self.run_id, metrics=list(items))
                return
            except Exception:  # noqa: BLE001 - "database is locked", a server hiccup ...
                if attempt == self.retries - 1:
                    self.failures += 1
                    return
                time.sleep(delay)
                delay *= 2


def _numeric(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------------- tuned sampling
TUNED_SAMPLE_TAG = "tune/best_sample"  # JSON: the sample settings a search found best for the model
TUNED_FROM_TAG = "tune/best_from"  # what found them: "search run <id>, trial <id>, <objective> = <value>"


@_retrying
def registered_version(uri: str, model: str) -> Any:
    """The registry's version for ``NAME``, ``NAME/VERSION``, ``NAME/latest`` or ``models:/NAME/VERSION``
    (``NAME`` alone: the newest version); a ValueError names what is missing."""
    name, _, version = model.removeprefix("models:/").partition("/")
    versions = client(uri).search_model_versions(f"name='{_quote(name)}'")
    if not versions:
        raise ValueError(f"no registered model named {name!r} in {uri}")
    if version and version != "latest":
        chosen = [v for v in versions if str(v.version) == version]
        if not chosen:
            raise ValueError(f"registered model {name!r} has no version {version}")
        return chosen[0]
    return max(versions, key=lambda v: int(v.version))


def model_run_id(source: str | Path, uri: str) -> str | None:
    """The MLflow run behind a model source (``runs:/ID/...``, a bare run id, ``models:/NAME/VERSION``), or None
    for a saved-model folder (a folder carries no run)."""
    import re

    s = str(source)
    if Path(s).is_dir():
        return None
    if re.fullmatch(r"[0-9a-f]{32}", s):
        return s
    if s.startswith("runs:/"):
        return s.removeprefix("runs:/").split("/", 1)[0]
    if s.startswith("models:/"):
        return registered_version(uri, s).run_id
    raise ValueError(f"model source {s!r} is neither a folder, runs:/RUN_ID/..., models:/NAME/VERSION nor a run id")


@_retrying
def tuned_sampling(run_id: str, uri: str) -> dict[str, Any] | None:
    """The sample settings a sampling search attached to the model of ``run_id`` (``arfm tune``), as
    ``{"sample": {...}, "from": "..."}``, or None when no search attached any. ``arfm evaluate``, the grid and
    ``arfm serve`` take them as the model's default sampling unless told otherwise."""
    tags = client(uri).get_run(run_id).data.tags
    if TUNED_SAMPLE_TAG not in tags:
        return None
    return {"sample": json.loads(tags[TUNED_SAMPLE_TAG]), "from": tags.get(TUNED_FROM_TAG, "")}


def tuned_sampling_for(source: str | Path, uri: str | None = None) -> dict[str, Any] | None:
    """:func:`tuned_sampling` of a model source (folder: None)."""
    uri = uri or tracking_uri()
    run_id = model_run_id(source, uri)
    return tuned_sampling(run_id, uri) if run_id else None


def attach_tuned_sampling(uri: str, run_id: str, sample: Mapping[str, Any], found_by: str,
                          version: Any = None) -> None:
    """Record ``sample`` as the model's tuned sampling: tags of the model's run and, when the model was given as
    a registered version, of that version and its registry alias ``tuned``."""
    tags = {TUNED_SAMPLE_TAG: json.dumps(dict(sample), sort_keys=True), TUNED_FROM_TAG: found_by}
    set_tags(uri, run_id, tags)
    if version is not None:
        c = client(uri)
        for k, v in tags.items():
            c.set_model_version_tag(version.name, version.version, k, v)
        c.set_registered_model_alias(version.name, "tuned", version.version)
