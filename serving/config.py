"""What a Serve application serves and how: pydantic settings, presets, and the Ray Serve config file.

:class:`ServeConfig` is the whole application: the models (one deployment each), their replicas, resources,
autoscaling and batch settings, the HTTP address and the request limits. It is what ``arfm serve`` builds from
its flags or reads from ``--config``, and it is the ``args`` of the application builder
:func:`arfm.serving.app.build_app`, so a Ray Serve config file written by :func:`serve_config_file`
(``arfm serve --write-config serve.yaml``) runs unchanged with Ray's own ``serve run serve.yaml`` or
``serve deploy``. ``arfm serve --config`` takes either form.

Batch settings travel as each model deployment's ``user_config`` as well, so ``serve deploy`` of an edited file
changes them on live replicas (``reconfigure``) without reloading the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from arfm.config import ConfigError, SampleConfig, format_validation_error

APP_IMPORT_PATH = "arfm.serving.app:build_app"
MODEL_DEPLOYMENT_PREFIX = "model-"
API_DEPLOYMENT = "api"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class BatchSettings(_Strict):
    """``@serve.batch`` settings of a model deployment (changeable on live replicas through ``user_config``)."""

    max_batch_size: int = Field(16, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.05, ge=0, le=10, description="how long a batch waits to fill")


class ModelSpec(_Strict):
    """One served model: where it comes from, its defaults and its deployment."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="the `model` field of a request")
    source: str | None = Field(None, description="saved-model folder, runs:/RUN_ID/model, models:/NAME/VERSION "
                               "or an MLflow run id")
    random_init: Literal["ar", "fm"] | None = Field(
        None, description="serve an untrained model of this paradigm instead (smoke tests, the benchmark)")
    preset: str = Field("tiny", description="random_init: the job preset the model is built from")
    set: list[str] = Field(default_factory=list, description="random_init: --set overrides of that job config")
    seed: int = Field(0, description="random_init: weight seed (every replica builds the same weights)")
    tracking_uri: str | None = Field(None, description="MLflow store of runs:/ and models:/ sources")
    sample: dict[str, Any] = Field(default_factory=dict,
                                   description="overrides of the model's own sample config: the request default")
    max_seconds: float | None = Field(None, gt=0, le=600,
                                      description="longest request; default: the model's training segment")
    device: str | None = Field(None, description="cpu or cuda[:i]; default cuda when available")
    decoding: Literal["eager", "compile", "cuda_graphs"] = Field("eager", description="AR step execution")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 weights (CUDA only)")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads of each replica")
    batch: BatchSettings = Field(default_factory=BatchSettings)
    num_replicas: int | Literal["auto"] = Field(1, description="replicas, or 'auto' with autoscaling_config")
    autoscaling_config: dict[str, Any] | None = None
    max_ongoing_requests: int | None = Field(None, ge=1, description="default: twice the max batch size")
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 1})
    health_probe_s: float = Field(30.0, gt=0, description="check_health generates a short clip when no request "
                                  "succeeded for this long (and after a failed batch)")

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        if (self.source is None) == (self.random_init is None):
            raise ValueError(f"model {self.name!r}: give exactly one of source and random_init")
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.batch.max_batch_size:
            raise ValueError(f"model {self.name!r}: max_ongoing_requests ({self.max_ongoing_requests}) below "
                             f"batch.max_batch_size ({self.batch.max_batch_size}) would cap every batch")
        if self.precision == "bf16" and not (self.device or "").startswith("cuda"):
            raise ValueError(f"model {self.name!r}: precision=bf16 needs device=cuda")
        if self.decoding == "cuda_graphs" and not (self.device or "").startswith("cuda"):
            raise ValueError(f"model {self.name!r}: decoding=cuda_graphs needs device=cuda")
        try:
            SampleConfig.model_validate(self.sample)
        except ValidationError as exc:
            raise ValueError(f"model {self.name!r}: sample: {format_validation_error(exc)}") from None
        return self

    @property
    def deployment_name(self) -> str:
        return MODEL_DEPLOYMENT_PREFIX + self.name

    def deployment_options(self) -> dict[str, Any]:
        """Ray Serve options of this model's deployment."""
        opts: dict[str, Any] = {
            "name": self.deployment_name,
            "max_ongoing_requests": self.max_ongoing_requests or 2 * self.batch.max_batch_size,
            "ray_actor_options": dict(self.ray_actor_options),
            "user_config": self.batch.model_dump(),
        }
        if self.autoscaling_config is not None:
            opts["autoscaling_config"] = dict(self.autoscaling_config)
            opts["num_replicas"] = "auto" if self.num_replicas == "auto" else self.num_replicas
            if opts["num_replicas"] != "auto":
                opts.pop("num_replicas")  # Serve takes one or the other
        else:
            opts["num_replicas"] = 1 if self.num_replicas == "auto" else self.num_replicas
        return opts


class Limits(_Strict):
    """What one request may ask for: bounds that keep a replica from being held by one request."""

    max_steps: int = Field(1000, ge=1, description="fixed-step solver steps (sample.steps)")
    min_tolerance: float = Field(1e-6, gt=0, description="smallest dopri5 rtol/atol")
    max_cfg: float = Field(50.0, gt=0, description="largest guidance weight (sample.cfg, control_cfg)")
    max_upload_mb: float = Field(32.0, gt=0, description="largest reference clip (inpainting, drums)")
    request_timeout_s: float = Field(300.0, gt=0, description="a request still waiting after this is cancelled")


class ServeConfig(_Strict):
    host: str = Field("127.0.0.1", description="bind address (loopback unless told otherwise)")
    port: int = Field(8000, ge=1, le=65535)
    app_name: str = "arfm"
    route_prefix: str = "/"
    models: list[ModelSpec] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    api_replicas: int = Field(1, ge=1)
    api_max_ongoing_requests: int = Field(1000, ge=1, description="requests the ingress holds at once")

    @model_validator(mode="after")
    def _unique(self) -> "ServeConfig":
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"models: names must be unique, {dup} repeat")
        return self


def preset_config(preset: str = "tiny", models: dict[str, str] | None = None, random_init: bool = False,
                  overrides: list[str] | tuple[str, ...] = (), **fields: Any) -> ServeConfig:
    """A config from flags: ``models`` as ``{name: source}``, or with ``random_init`` an untrained AR and FM model
    (``ar`` and ``fm``) of ``preset``; ``overrides`` are job-config ``--set`` items for the untrained models;
    ``fields`` set ServeConfig fields (``host``, ``port`` ...) and, under ``model_fields``, fields of every model."""
    per_model = fields.pop("model_fields", {})
    if random_init:
        if models:
            raise ConfigError("give --model NAME=SOURCE or --random-init, not both")
        specs = [dict(name=p, random_init=p, preset=preset, set=list(overrides), **per_model) for p in ("ar", "fm")]
    elif models:
        specs = [dict(name=n, source=s, **per_model) for n, s in models.items()]
    else:
        raise ConfigError("nothing to serve: give --model NAME=SOURCE (repeatable), --random-init or --config")
    return validate({"models": specs, **fields})


def validate(data: dict[str, Any]) -> ServeConfig:
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def serve_config_file(cfg: ServeConfig) -> dict[str, Any]:
    """The Ray Serve config file (``ServeDeploySchema``) of ``cfg``: ``serve run`` / ``serve deploy`` compatible."""
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": cfg.host, "port": cfg.port},
        "applications": [{
            "name": cfg.app_name,
            "route_prefix": cfg.route_prefix,
            "import_path": APP_IMPORT_PATH,
            "args": cfg.model_dump(mode="json"),
            "deployments": [{k: v for k, v in m.deployment_options().items()} for m in cfg.models],
        }],
    }


def load(path: str | Path) -> tuple[ServeConfig, dict[str, dict[str, Any]]]:
    """A ServeConfig YAML, or a Ray Serve config file with one application built by :data:`APP_IMPORT_PATH`.

    Returns the config and, for a Ray Serve file, the per-deployment options its ``deployments`` section sets
    (``{deployment name: options}``), which take precedence over the config's own, as they do under ``serve run``.
    """
    data = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
    if data is None:
        raise ConfigError(f"--config {path}: no such file, or empty")
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: the top level must be a mapping")
    if "applications" not in data:
        return validate(data), {}
    from ray.serve.schema import ServeDeploySchema

    try:
        schema = ServeDeploySchema.model_validate(data)
    except Exception as exc:  # pydantic v1/v2 errors of Ray's schema
        raise ConfigError(f"--config {path}: not a valid Ray Serve config file: {exc}") from None
    apps = [a for a in schema.applications if a.import_path == APP_IMPORT_PATH]
    if len(apps) != 1:
        raise ConfigError(f"--config {path}: expected one application with import_path {APP_IMPORT_PATH}")
    app = apps[0]
    http = schema.http_options
    cfg = validate({**app.args, "host": http.host, "port": http.port, "app_name": app.name,
                    "route_prefix": app.route_prefix or "/"})
    overrides = {d.name: d.model_dump(exclude_unset=True, exclude={"name"}) for d in app.deployments}
    known = {m.deployment_name for m in cfg.models} | {API_DEPLOYMENT}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"--config {path}: deployments {unknown} are not in this application ({sorted(known)})")
    return cfg, overrides
