"""Checks that the deployment's pieces agree with each other and with the project. Each returns a list of
problems (empty: they agree), so a test can break one field and see it named.

- :func:`ray_version_problems`: the Ray pinned in pyproject.toml, the image's RAY_VERSION, every ``rayVersion``
  and the Ray that is installed are one version.
- :func:`mlflow_problems`: every Ray container gets the MLflow service's URI, which the server's Service, port
  and ``--allowed-hosts`` answer to.
- :func:`storage_problems`: every Ray container mounts the shared volume at its ``ARFM_HOME``.
- :func:`grid_resource_problems`: the RayJob's cluster can hold the Ray Train workers each job of its study asks
  for (the head schedules nothing), and a study without GPUs gets a cluster without GPUs.
- :func:`serve_resource_problems`: the RayService's workers can hold the model replicas its config asks for.
- :func:`image_problems`: the Dockerfile: pinned bases (CUDA for GPU workers, not for the head), the project
  installed through infra/install.sh, a non-root user matching the pods', nothing secret.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

from k8s_checks import cluster_specs, name_of, serve_config

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("local", "gpu")  # infra/k8s/overlays (a test checks the list against the folder)
MLFLOW_SERVICE = "arfm-mlflow"
HOME_CLAIM = "arfm-home"
PROJECT_DIR = "/opt/arfm"  # where the image holds the repository (its WORKDIR)


def pyproject(root: Path) -> Obj:
    return tomllib.loads((root / "pyproject.toml").read_text())


def pinned(root: Path, package: str) -> str:
    for dep in pyproject(root)["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==([\w.]+)", dep.replace(" ", ""))
        if m:
            return m[2]
    raise LookupError(f"pyproject.toml pins no {package}==")


def dockerfile(root: Path) -> list[Obj]:
    """The instructions of infra/Dockerfile as ``{"instruction", "value", "stage"}`` (stage: the FROM's alias)."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(root / "infra" / "Dockerfile"))
    out, stage = [], None
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            stage = ins["value"].split(" AS ")[-1].strip() if " AS " in ins["value"].upper() else None
        out.append({"instruction": ins["instruction"], "value": ins["value"], "stage": stage})
    return out


def dockerfile_args(instructions: list[Obj]) -> dict[str, set[str]]:
    """Every default each ARG name has anywhere in the Dockerfile."""
    args: dict[str, set[str]] = {}
    for ins in instructions:
        if ins["instruction"] == "ARG" and "=" in ins["value"]:
            name, _, default = ins["value"].partition("=")
            args.setdefault(name.strip(), set()).add(default.strip().strip('"'))
    return args


def ray_containers(objs: list[Obj]):
    """``(where, pod spec, container)`` of every Ray pod template (head and workers of every cluster spec)."""
    for obj in objs:
        for path, spec in cluster_specs(obj):
            groups = [("headGroupSpec", spec.get("headGroupSpec", {}))]
            groups += [(f"workerGroupSpecs[{g.get('groupName')}]", g) for g in spec.get("workerGroupSpecs", [])]
            for gname, g in groups:
                pod = g.get("template", {}).get("spec", {})
                for c in pod.get("containers", []):
                    yield f"{name_of(obj)}: {path}.{gname} {c.get('name')}", pod, c


def env_of(container: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def ray_version_problems(objs: list[Obj], root: Path, instructions: list[Obj] | None = None) -> list[str]:
    import ray

    want = pinned(root, "ray")
    out = [] if ray.__version__ == want else [f"installed ray {ray.__version__} != pyproject's ray=={want}"]
    image = dockerfile_args(instructions or dockerfile(root)).get("RAY_VERSION", set())
    if image != {want}:
        out.append(f"infra/Dockerfile: ARG RAY_VERSION {sorted(image)} != pyproject's ray=={want}")
    for obj in objs:
        for path, spec in cluster_specs(obj):
            if spec.get("rayVersion") != want:
                out.append(f"{name_of(obj)}: {path}.rayVersion {spec.get('rayVersion')!r} != pyproject's ray=={want}")
    return out


def _find(objs: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in objs if o.get("kind") == kind and o["metadata"]["name"] == name), None)


def _args(container: Obj) -> dict[str, str]:
    out = {}
    for a in container.get("args", []):
        flag, eq, value = a.partition("=")
        out[flag] = value if eq else ""
    return out


def mlflow_problems(objs: list[Obj]) -> list[str]:
    svc, dep = _find(objs, "Service", MLFLOW_SERVICE), _find(objs, "Deployment", MLFLOW_SERVICE)
    if svc is None or dep is None:
        return [f"no Service and Deployment named {MLFLOW_SERVICE}"]
    port = svc["spec"]["ports"][0]
    server = dep["spec"]["template"]["spec"]["containers"][0]
    named = {p.get("name"): p["containerPort"] for p in server.get("ports", [])}
    target = named.get(port["targetPort"], port["targetPort"])
    args = _args(server)
    out = []
    if str(target) != args.get("--port"):
        out.append(f"Service/{MLFLOW_SERVICE} sends to port {target}, the server listens on --port={args.get('--port')}")
    if svc["spec"]["selector"].items() - dep["spec"]["template"]["metadata"]["labels"].items():
        out.append(f"Service/{MLFLOW_SERVICE} selects no pod of Deployment/{MLFLOW_SERVICE}")
    host = f"{MLFLOW_SERVICE}:{port['port']}"
    if host not in args.get("--allowed-hosts", "").split(","):
        out.append(f"Deployment/{MLFLOW_SERVICE}: --allowed-hosts {args.get('--allowed-hosts')!r} lacks {host}")
    uri = f"http://{host}"
    for where, _, c in ray_containers(objs):
        got = env_of(c).get("MLFLOW_TRACKING_URI")
        if got != uri:
            out.append(f"{where}: MLFLOW_TRACKING_URI {got!r} != {uri}")
    return out


def storage_problems(objs: list[Obj]) -> list[str]:
    out = [] if _find(objs, "PersistentVolumeClaim", HOME_CLAIM) else [f"no PersistentVolumeClaim {HOME_CLAIM}"]
    for where, pod, c in ray_containers(objs):
        volumes = {v["name"] for v in pod.get("volumes", [])
                   if v.get("persistentVolumeClaim", {}).get("claimName") == HOME_CLAIM}
        mounts = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in volumes}
        home = env_of(c).get("ARFM_HOME")
        if home is None or home not in mounts:
            out.append(f"{where}: ARFM_HOME {home!r} is not where {HOME_CLAIM} is mounted ({sorted(mounts)})")
    return out


def cpu_quantity(q: Any) -> float:
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def pod_resources(group: Obj) -> tuple[float, int]:
    """``(CPUs, GPUs)`` Ray sees on a pod of ``group``: rayStartParams, else the container's limits (KubeRay)."""
    c = group["template"]["spec"]["containers"][0]
    res = c.get("resources", {})
    lim = {**res.get("requests", {}), **res.get("limits", {})}
    params = group.get("rayStartParams") or {}
    cpus = float(params["num-cpus"]) if "num-cpus" in params else cpu_quantity(lim.get("cpu", 0))
    gpus = int(params["num-gpus"]) if "num-gpus" in params else int(lim.get("nvidia.com/gpu", 0))
    return cpus, gpus


def entrypoint(objs: list[Obj]) -> list[str]:
    job = next(o for o in objs if o.get("kind") == "RayJob")
    return shlex.split(job["spec"]["entrypoint"])


def grid_resource_problems(objs: list[Obj], root: Path) -> list[str]:
    from arfm.study import cell_config, codec_config, load_study

    job = next(o for o in objs if o.get("kind") == "RayJob")
    spec = job["spec"]["rayClusterSpec"]
    argv = entrypoint(objs)
    preset = argv[argv.index("--preset") + 1]
    study = load_study(root / "experiments" / "study.yaml", preset)
    configs = [codec_config(study, fr, Path("/mnt/arfm")) for fr in study.frame_rates]
    configs += [cell_config(study, cell, Path("/mnt/arfm")) for cell in study.cells]
    out = []
    if (spec["headGroupSpec"].get("rayStartParams") or {}).get("num-cpus") != "0":
        out.append(f"{name_of(job)}: the head must schedule nothing (rayStartParams num-cpus \"0\")")
    groups = [(g, *pod_resources(g)) for g in spec.get("workerGroupSpecs", [])]
    for cfg in configs:
        t = cfg.train
        # Ray Train workers one pod can host: each takes cpus_per_worker CPUs and, on GPUs, one GPU
        fits = sum(g["maxReplicas"] * (min(gpus, int(cpus // t.cpus_per_worker)) if t.use_gpu
                                       else int(cpus // t.cpus_per_worker)) for g, cpus, gpus in groups)
        if fits < t.workers:
            out.append(f"{name_of(job)}: {cfg.name} asks for {t.workers} workers x ({t.cpus_per_worker} CPU"
                       f"{' + 1 GPU' if t.use_gpu else ''}); the worker groups hold at most {fits}")
    if not any(c.train.use_gpu for c in configs) and any(gpus for _, _, gpus in groups):
        out.append(f"{name_of(job)}: study {preset!r} uses no GPU but the cluster asks for GPU workers")
    return out


def serve_resource_problems(objs: list[Obj]) -> list[str]:
    svc = next(o for o in objs if o.get("kind") == "RayService")
    groups = [pod_resources(g) + (g["maxReplicas"],) for g in svc["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    out, need_cpu, need_gpu = [], 0.0, 0.0
    for app in serve_config(svc)["applications"]:
        for m in app["args"]["models"]:
            opts = m.get("ray_actor_options", {})
            replicas = (m.get("autoscaling_config") or {}).get("max_replicas", m.get("num_replicas", 1))
            need_cpu += replicas * opts.get("num_cpus", 1)
            need_gpu += replicas * opts.get("num_gpus", 0)
            if str(m.get("device") or "").startswith("cuda") and not opts.get("num_gpus"):
                out.append(f"{name_of(svc)}: model {m['name']} runs on {m['device']} but asks Ray for no GPU")
    have_cpu = sum(cpus * n for cpus, _, n in groups)
    have_gpu = sum(gpus * n for _, gpus, n in groups)
    if need_cpu > have_cpu or need_gpu > have_gpu:
        out.append(f"{name_of(svc)}: model replicas need {need_cpu:g} CPUs and {need_gpu:g} GPUs, the serving "
                   f"workers hold {have_cpu:g} CPUs and {have_gpu:g} GPUs")
    if not need_gpu and have_gpu:
        out.append(f"{name_of(svc)}: no model asks for a GPU but the serving workers request GPUs")
    return out


SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE", re.I)


def image_problems(root: Path, objs: list[Obj], instructions: list[Obj] | None = None) -> list[str]:
    ins = instructions or dockerfile(root)
    args = {k: v.pop() if len(v) == 1 else v for k, v in dockerfile_args(ins).items()}
    out = []
    for name in ("UV_IMAGE", "BUILD_BASE", "CPU_BASE", "GPU_BASE"):
        ref = args.get(name)
        if not isinstance(ref, str) or ":" not in ref.rsplit("/", 1)[-1] or ref.endswith(":latest"):
            out.append(f"infra/Dockerfile: ARG {name}={ref!r} is not a pinned image tag")
    if not str(args.get("GPU_BASE", "")).startswith("nvidia/cuda:"):
        out.append(f"infra/Dockerfile: the GPU base {args.get('GPU_BASE')!r} is not a CUDA image")
    if "cuda" in str(args.get("CPU_BASE", "")).lower():
        out.append(f"infra/Dockerfile: the CPU base {args.get('CPU_BASE')!r} is a CUDA image")
    froms = [i["value"] for i in ins if i["instruction"] == "FROM"]
    for flavor in ("cpu", "gpu"):
        if not any(f.startswith(f"${{{flavor.upper()}_BASE}} AS base-{flavor}") for f in froms):
            out.append(f"infra/Dockerfile: no stage base-{flavor} FROM ${{{flavor.upper()}_BASE}}")
    if not any("bash infra/install.sh" in i["value"] for i in ins if i["instruction"] == "RUN"):
        out.append("infra/Dockerfile: the project is not installed through infra/install.sh")
    final = [i for i in ins if i["stage"] == ins[-1]["stage"]]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    uid = users[-1].split(":")[0] if users else "0"
    if not uid.isdigit() or int(uid) == 0:
        out.append(f"infra/Dockerfile: the runtime stage's USER is {uid!r}, not a numeric non-root user")
    workdirs = [i["value"] for i in final if i["instruction"] == "WORKDIR"]
    if workdirs[-1:] != [PROJECT_DIR]:
        out.append(f"infra/Dockerfile: the runtime WORKDIR {workdirs[-1:]} is not {PROJECT_DIR}")
    for i in ins:
        if i["instruction"] in ("ENV", "ARG", "LABEL") and SECRETISH.search(i["value"]):
            out.append(f"infra/Dockerfile: {i['instruction']} {i['value']!r} looks like a credential")
        if i["instruction"] in ("COPY", "ADD") and re.search(r"\.env\b|\.netrc|\.pem\b|auth_token|kubeconfig",
                                                             i["value"]):
            out.append(f"infra/Dockerfile: {i['instruction']} {i['value']!r} copies a credential file")
    for where, pod, _ in ray_containers(objs):
        if str(pod.get("securityContext", {}).get("runAsUser")) != uid:
            out.append(f"{where}: runAsUser {pod.get('securityContext', {}).get('runAsUser')} != the image's {uid}")
    version = pyproject(root)["project"]["version"]
    for obj in objs:
        for c in _containers(obj):
            image = c.get("image", "")
            if image.rsplit("/", 1)[-1].startswith("arfm:") and not re.fullmatch(
                    rf"{re.escape(version)}-(cpu|gpu)", image.rsplit(":", 1)[-1]):
                out.append(f"{name_of(obj)}: image {image} is not tagged {version}-cpu or {version}-gpu")
    return out


def _containers(node: Any):
    if isinstance(node, dict):
        for field, value in node.items():
            if field in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)
