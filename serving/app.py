"""The Serve application: the API ingress bound to one model deployment per served model, and how to run it.

``build_app(args)`` is the application builder Ray Serve calls for a config file (``import_path:
arfm.serving.app:build_app``, ``args``: a :class:`~arfm.serving.config.ServeConfig`); :func:`start` runs an
application in this process's Ray cluster on the config's address (``127.0.0.1`` unless told otherwise) and
returns once every deployment is up.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from arfm.serving.config import API_DEPLOYMENT, ServeConfig, validate


def compose(cfg: ServeConfig, overrides: dict[str, dict[str, Any]] | None = None) -> Application:
    """The application of ``cfg``; ``overrides``: per-deployment Serve options (a config file's
    ``deployments`` section) applied over the config's own."""
    from arfm.serving.api import Api
    from arfm.serving.deployments import ModelServer

    overrides = overrides or {}
    limits = cfg.limits.model_dump()
    handles = {}
    for spec in cfg.models:
        opts = {**spec.deployment_options(), **overrides.get(spec.deployment_name, {})}
        handles[spec.name] = ModelServer.options(**opts).bind(spec.model_dump(mode="json"), limits)
    api = {"name": API_DEPLOYMENT, "num_replicas": cfg.api_replicas,
           "max_ongoing_requests": cfg.api_max_ongoing_requests, **overrides.get(API_DEPLOYMENT, {})}
    return Api.options(**api).bind(handles, limits)


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for Ray Serve config files (``serve run`` / ``serve deploy``)."""
    return compose(validate(dict(args)))


def start(cfg: ServeConfig, overrides: dict[str, dict[str, Any]] | None = None, blocking: bool = False) -> str:
    """Start Serve on ``cfg.host:cfg.port`` (Ray started here if it is not) and deploy the application;
    returns its base URL. ``blocking`` serves until interrupted."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, proxy_location="HeadOnly")
    serve.run(compose(cfg, overrides), name=cfg.app_name, route_prefix=cfg.route_prefix, blocking=blocking)
    return f"http://{cfg.host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"
