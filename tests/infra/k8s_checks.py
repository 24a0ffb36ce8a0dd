"""Offline checks of rendered Kubernetes objects. Each returns a list of problems (empty: the object passes),
each problem naming the object and the field, so that a test can show that a broken field is caught.

- :func:`crd_problems`: a KubeRay object against its CRD's OpenAPI schema, with unknown fields rejected (as the
  API server's strict field validation does: ``additionalProperties: false`` wherever the schema lists
  ``properties`` and does not preserve unknown fields). CEL rules (``x-kubernetes-validations``) are not run
  here; :func:`kuberay_problems` covers the rules our objects touch.
- :func:`core_problems`: a core object against Kubernetes' own schemas (``kubernetes-validate``, strict).
- :func:`serve_config_problems`: a RayService's ``serveConfigV2`` against Ray Serve's ``ServeDeploySchema``
  with unknown keys rejected.
- :func:`kuberay_problems`: the KubeRay operator's own spec validation (ray-operator/controllers/ray/utils/
  validation.go at v1.7.0) for the fields these manifests use.
- :func:`secret_problems`: credentials only by reference to a Secret.
"""

from __future__ import annotations

import gzip
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

K8S_VERSION = "1.33"  # the Kubernetes API the core objects are validated against
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE_KEY", re.I)
URI_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)
MAX_NAME = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")

Obj = dict[str, Any]


def name_of(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def is_kuberay(obj: Obj) -> bool:
    return str(obj.get("apiVersion", "")).startswith("ray.io/")


# ---- KubeRay CRDs


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    return schema


@lru_cache(maxsize=None)
def crd_validators(schemas_dir: str) -> dict[tuple[str, str], Any]:
    """``{(apiVersion, kind): validator}`` for every served version of the CRDs in ``schemas_dir``."""
    import jsonschema

    validators = {}
    for path in sorted([*Path(schemas_dir).glob("*.yaml"), *Path(schemas_dir).glob("*.yaml.gz")]):
        crd = yaml.safe_load(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_text())
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = _strict(version["schema"]["openAPIV3Schema"])
                validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft4Validator(schema)
    return validators


def crd_problems(obj: Obj, schemas_dir: str | Path) -> list[str]:
    validator = crd_validators(str(schemas_dir)).get((obj.get("apiVersion"), obj.get("kind")))
    if validator is None:
        return [f"{name_of(obj)}: no CRD schema for {obj.get('apiVersion')} {obj.get('kind')} in {schemas_dir}"]
    return [f"{name_of(obj)}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]


# ---- core Kubernetes objects


def core_problems(obj: Obj) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name_of(obj)}: {'.'.join(map(str, exc.path)) or '(top)'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name_of(obj)}: Kubernetes {K8S_VERSION} has no schema for {obj.get('apiVersion')} {obj.get('kind')}"]
    return []


# ---- Ray Serve


def serve_config(obj: Obj) -> Obj:
    return yaml.safe_load(obj["spec"]["serveConfigV2"])


def serve_config_problems(obj: Obj) -> list[str]:
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(serve_config(obj), extra="forbid")
    except (ValidationError, yaml.YAMLError, KeyError, TypeError) as exc:
        return [f"{name_of(obj)}: spec.serveConfigV2: {exc}"]
    return []


# ---- the KubeRay operator's validation (the subset our objects use)


def cluster_specs(obj: Obj) -> list[tuple[str, Obj]]:
    """``(path, RayClusterSpec)`` of a RayCluster, RayJob or RayService."""
    spec = obj.get("spec", {})
    field = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}.get(obj.get("kind"))
    if field is None:
        return [("spec", spec)] if obj.get("kind") == "RayCluster" else []
    return [(f"spec.{field}", spec[field])] if field in spec else []


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _cluster_problems(where: str, spec: Obj) -> list[str]:
    out = []
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    v2 = (spec.get("autoscalerOptions") or {}).get("version") == "v2"
    groups = [("headGroupSpec", spec.get("headGroupSpec", {}))]
    groups += [(f"workerGroupSpecs[{g.get('groupName')}]", g) for g in spec.get("workerGroupSpecs", [])]
    for gname, g in groups:
        pod = g.get("template", {}).get("spec", {})
        if not pod.get("containers"):
            out.append(f"{where}.{gname}: the pod template needs at least one container")
        params = g.get("rayStartParams") or {}
        if g.get("resources") and any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
            out.append(f"{where}.{gname}: resources set both in rayStartParams and in resources")
        if "labels" in params:
            out.append(f"{where}.{gname}.rayStartParams.labels: use the group's labels field")
        if v2 and pod.get("restartPolicy") not in (None, "", "Never"):
            out.append(f"{where}.{gname}.template.spec.restartPolicy: must be Never or unset with autoscaler v2")
        if gname != "headGroupSpec":
            lo, hi = g.get("minReplicas"), g.get("maxReplicas")
            if not autoscaling and (lo is None or hi is None):
                out.append(f"{where}.{gname}: minReplicas and maxReplicas are required without autoscaling")
            if (lo is not None and lo < 0) or (hi is not None and hi < 0) or (None not in (lo, hi) and lo > hi):
                out.append(f"{where}.{gname}: replicas must satisfy 0 <= minReplicas <= maxReplicas ({lo}, {hi})")
    if ((spec.get("autoscalerOptions") or {}).get("idleTimeoutSeconds") or 0) < 0:
        out.append(f"{where}.autoscalerOptions.idleTimeoutSeconds: must be non-negative")
    auth = spec.get("authOptions") or {}
    if auth.get("mode", "disabled") == "token" and _version(spec.get("rayVersion", "0")) < (2, 52):
        out.append(f"{where}.authOptions.mode: token needs rayVersion 2.52.0 or later (got {spec.get('rayVersion')!r})")
    return out


def _deletion_problems(spec: Obj, autoscaling: bool) -> list[str]:
    out = []
    if not spec.get("shutdownAfterJobFinishes") and (spec.get("ttlSecondsAfterFinished") or 0) > 0:
        out.append("spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes")
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return out
    rules, legacy = strategy.get("deletionRules") or [], "onSuccess" in strategy or "onFailure" in strategy
    if rules and spec.get("shutdownAfterJobFinishes"):
        out.append("spec.deletionStrategy.deletionRules: exclusive with shutdownAfterJobFinishes")
    if rules and legacy:
        out.append("spec.deletionStrategy: onSuccess/onFailure and deletionRules cannot be used together")
    if not rules and not ("onSuccess" in strategy and "onFailure" in strategy):
        out.append("spec.deletionStrategy: needs both onSuccess and onFailure, or deletionRules")
    ttls: dict[tuple[str, str], dict[str, int]] = {}
    for i, rule in enumerate(rules):
        cond, policy = rule.get("condition", {}), rule.get("policy")
        which = [k for k in ("jobStatus", "jobDeploymentStatus") if k in cond]
        if len(which) != 1:
            out.append(f"spec.deletionStrategy.deletionRules[{i}].condition: exactly one of jobStatus and "
                       "jobDeploymentStatus")
            continue
        if cond.get("ttlSeconds", 0) < 0:
            out.append(f"spec.deletionStrategy.deletionRules[{i}].condition.ttlSeconds: must be non-negative")
        if policy == "DeleteWorkers" and autoscaling:
            out.append(f"spec.deletionStrategy.deletionRules[{i}].policy: DeleteWorkers is not supported with "
                       "autoscaling")
        by_policy = ttls.setdefault((which[0], cond[which[0]]), {})
        if policy in by_policy:
            out.append(f"spec.deletionStrategy.deletionRules[{i}]: duplicate rule for {policy} on {cond[which[0]]}")
        by_policy[policy] = cond.get("ttlSeconds", 0)
    for (_, status), by_policy in ttls.items():
        seq = [by_policy[p] for p in ("DeleteWorkers", "DeleteCluster", "DeleteSelf") if p in by_policy]
        if seq != sorted(seq):
            out.append(f"spec.deletionStrategy.deletionRules: TTLs for {status} must not decrease from "
                       "DeleteWorkers to DeleteCluster to DeleteSelf")
    return out


def kuberay_problems(obj: Obj) -> list[str]:
    kind, spec, meta = obj.get("kind"), obj.get("spec", {}), obj.get("metadata", {})
    out = []
    name = meta.get("name", "")
    if kind in MAX_NAME and (len(name) > MAX_NAME[kind] or not DNS1035.fullmatch(name)):
        out.append(f"metadata.name: a DNS-1035 label of at most {MAX_NAME[kind]} characters (got {name!r})")
    for where, cluster in cluster_specs(obj):
        out += _cluster_problems(where, cluster)
    if kind == "RayJob":
        if "rayClusterSpec" not in spec and not spec.get("clusterSelector"):
            out.append("spec: one of rayClusterSpec and clusterSelector is required")
        out += _deletion_problems(spec, bool(spec.get("rayClusterSpec", {}).get("enableInTreeAutoscaling")))
        for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
            if field in spec and spec[field] <= 0:
                out.append(f"spec.{field}: must be a positive integer")
        if spec.get("backoffLimit", 0) < 0:
            out.append("spec.backoffLimit: must be non-negative")
        try:
            yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
        except yaml.YAMLError as exc:
            out.append(f"spec.runtimeEnvYAML: not YAML ({exc})")
    if kind == "RayService":
        kind_of_upgrade = (spec.get("upgradeStrategy") or {}).get("type")
        if kind_of_upgrade not in (None, "NewCluster", "NewClusterWithIncrementalUpgrade", "None"):
            out.append(f"spec.upgradeStrategy.type: {kind_of_upgrade!r} is not NewCluster, "
                       "NewClusterWithIncrementalUpgrade or None")
        if kind_of_upgrade == "NewClusterWithIncrementalUpgrade" and not (
                spec.get("rayClusterConfig", {}).get("enableInTreeAutoscaling")
                and (spec.get("upgradeStrategy") or {}).get("clusterUpgradeOptions")):
            out.append("spec.upgradeStrategy: NewClusterWithIncrementalUpgrade needs autoscaling and "
                       "clusterUpgradeOptions")
        if (spec.get("rayClusterConfig", {}).get("headGroupSpec", {}).get("headService") or {}).get(
                "metadata", {}).get("name"):
            out.append("spec.rayClusterConfig.headGroupSpec.headService.metadata.name: must not be set")
        if spec.get("rayClusterDeletionDelaySeconds", 0) < 0:
            out.append("spec.rayClusterDeletionDelaySeconds: must be non-negative")
        timeout = (meta.get("annotations") or {}).get("ray.io/initializing-timeout")
        if timeout is not None and not re.fullmatch(r"([1-9]\d*)|((\d+(\.\d+)?(ns|us|ms|s|m|h))+)", timeout):
            out.append(f"metadata.annotations.ray.io/initializing-timeout: not a duration or seconds ({timeout!r})")
    return [f"{name_of(obj)}: {p}" for p in out]


# ---- credentials


def _env_problems(where: str, node: Any) -> list[str]:
    out = []
    if isinstance(node, dict):
        for field, value in node.items():
            if field == "env" and isinstance(value, list):
                for var in value:
                    if SECRET_NAME.search(var.get("name", "")) and "value" in var:
                        out.append(f"{where}: env {var['name']} has an inline value (use valueFrom.secretKeyRef)")
            else:
                out += _env_problems(where, value)
    elif isinstance(node, list):
        for item in node:
            out += _env_problems(where, item)
    elif isinstance(node, str) and URI_WITH_PASSWORD.search(node):
        out.append(f"{where}: a URI with a password ({URI_WITH_PASSWORD.search(node)[0]}...)")
    return out


def secret_problems(obj: Obj) -> list[str]:
    if obj.get("kind") == "Secret":
        return [f"{name_of(obj)}: a Secret in the manifests (create it in the cluster; reference it by name)"]
    return _env_problems(name_of(obj), obj)
