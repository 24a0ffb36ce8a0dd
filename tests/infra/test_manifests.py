"""Every overlay of infra/k8s renders to objects that validate offline: KubeRay objects against the v1.7.0 CRDs
with unknown fields rejected and against the operator's own rules, core objects against Kubernetes' schemas,
the RayService's serveConfigV2 against Ray Serve's ServeDeploySchema, credentials only by reference. Then the
pieces agree: one Ray version, one MLflow URI, one shared ARFM_HOME, clusters that hold what the grid and the
Serve application ask for. Each check is shown to catch a deliberately broken field."""

import copy
from collections import Counter

import pytest

import deploy_checks as dc
import k8s_checks as kc

ROOT, OVERLAYS = dc.REPO, dc.OVERLAYS


def find(objs, kind, name=None):
    return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


def object_problems(obj, schemas):
    problems = kc.secret_problems(obj)
    if kc.is_kuberay(obj):
        schema = kc.crd_problems(obj, schemas)  # the operator validates only what the API server admitted
        problems += schema or kc.kuberay_problems(obj)
        if obj["kind"] == "RayService":
            problems += kc.serve_config_problems(obj)
    else:
        problems += kc.core_problems(obj)
    return problems


def agreement_problems(objs):
    return (dc.ray_version_problems(objs, ROOT) + dc.mlflow_problems(objs) + dc.storage_problems(objs)
            + dc.grid_resource_problems(objs, ROOT) + dc.serve_resource_problems(objs)
            + dc.image_problems(ROOT, objs))


def test_every_overlay_is_tested():
    assert sorted(p.name for p in (ROOT / "infra" / "k8s" / "overlays").iterdir() if p.is_dir()) == sorted(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_validate(rendered, kuberay_schemas, overlay):
    objs = rendered[overlay]
    kinds = Counter(o["kind"] for o in objs)
    for kind in ("RayCluster", "RayJob", "RayService", "Deployment", "Service", "StatefulSet",
                 "PersistentVolumeClaim", "ConfigMap", "Namespace"):
        assert kinds[kind] >= 1, f"{overlay}: no {kind} rendered"
    problems = [p for obj in objs for p in object_problems(obj, kuberay_schemas)]
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_pieces_agree(rendered, overlay):
    assert agreement_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_job_and_service_clusters_are_the_ray_cluster(rendered, overlay):
    """components/cluster-sync ran after every change to the RayCluster (the overlay lists it last)."""
    objs = rendered[overlay]
    cluster = find(objs, "RayCluster")["spec"]
    assert find(objs, "RayJob")["spec"]["rayClusterSpec"] == cluster
    serving = find(objs, "RayService")["spec"]["rayClusterConfig"]
    for field in ("headGroupSpec", "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "authOptions"):
        assert serving[field] == cluster[field], field


def test_overlays_differ_where_they_should(rendered):
    local, gpu = rendered["local"], rendered["gpu"]
    assert dc.entrypoint(local)[-2:] == ["--preset", "small"] and dc.entrypoint(gpu)[-2:] == ["--preset", "paper"]
    gpus = {name: sum(dc.pod_resources(g)[1] for g in find(objs, "RayCluster")["spec"]["workerGroupSpecs"])
            for name, objs in rendered.items()}
    assert gpus["local"] == 0 and gpus["gpu"] > 0
    assert find(local, "PersistentVolumeClaim", "arfm-home")["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert find(gpu, "PersistentVolumeClaim", "arfm-home")["spec"]["accessModes"] == ["ReadWriteMany"]


# ---- a deliberately broken field fails each check


def _container(obj, group="head"):
    spec = obj["spec"] if obj["kind"] == "RayCluster" else obj["spec"].get("rayClusterSpec") or \
        obj["spec"]["rayClusterConfig"]
    g = spec["headGroupSpec"] if group == "head" else spec["workerGroupSpecs"][0]
    return g["template"]["spec"]["containers"][0]


def _serve(obj, edit):
    import yaml

    cfg = kc.serve_config(obj)
    edit(cfg)
    obj["spec"]["serveConfigV2"] = yaml.safe_dump(cfg)


def _env(container, name, value):
    container["env"] = [e for e in container.get("env", []) if e["name"] != name] + [{"name": name, "value": value}]


OBJECT_BREAKS = {
    # (overlay, kind, edit, a fragment of the expected problem)
    "crd: unknown container field": (
        "gpu", "RayCluster", lambda o: _container(o).update(imagePullPolicyy="Always"), "imagePullPolicyy"),
    "crd: unknown spec field": ("local", "RayJob", lambda o: o["spec"].update(shutdownAfterJobFinish=True),
                                "shutdownAfterJobFinish"),
    "crd: wrong type": ("gpu", "RayJob", lambda o: o["spec"].update(backoffLimit="two"), "backoffLimit"),
    "crd: enum": ("gpu", "RayCluster", lambda o: o["spec"]["autoscalerOptions"].update(version="v3"), "'v3'"),
    "core: unknown field": ("gpu", "Deployment",
                            lambda o: o["spec"]["template"]["spec"]["containers"][0].update(port=5000), "'port'"),
    "core: wrong type": ("local", "StatefulSet", lambda o: o["spec"].update(replicas="one"), "replicas"),
    "serve: unknown key": ("gpu", "RayService",
                           lambda o: _serve(o, lambda c: c["applications"][0].update(import_paht="x:y")),
                           "import_paht"),
    "serve: unknown deployment option": (
        "local", "RayService",
        lambda o: _serve(o, lambda c: c["applications"][0]["deployments"][0].update(health_check_period=5)),
        "health_check_period"),
    "kuberay: deletion rules with shutdown": (
        "gpu", "RayJob", lambda o: o["spec"].update(shutdownAfterJobFinishes=True), "exclusive"),
    "kuberay: DeleteWorkers with autoscaling": (
        "gpu", "RayJob", lambda o: o["spec"]["deletionStrategy"]["deletionRules"][0].update(policy="DeleteWorkers"),
        "DeleteWorkers"),
    "kuberay: min above max": ("local", "RayCluster",
                               lambda o: o["spec"]["workerGroupSpecs"][0].update(minReplicas=5), "minReplicas"),
    "kuberay: upgrade strategy": ("gpu", "RayService", lambda o: o["spec"]["upgradeStrategy"].update(type="Rolling"),
                                  "upgradeStrategy.type"),
    "secrets: inline password": ("gpu", "Deployment",
                                 lambda o: _env(o["spec"]["template"]["spec"]["containers"][0], "PGPASSWORD", "hunter2"),
                                 "PGPASSWORD"),
    "secrets: password in a URI": (
        "local", "Deployment",
        lambda o: o["spec"]["template"]["spec"]["containers"][0]["args"].append(
            "--backend-store-uri=postgresql://mlflow:hunter2@arfm-postgres:5432/mlflow"), "URI with a password"),
}


@pytest.mark.parametrize("case", sorted(OBJECT_BREAKS))
def test_broken_object_field_fails(rendered, kuberay_schemas, case):
    overlay, kind, edit, fragment = OBJECT_BREAKS[case]
    obj = copy.deepcopy(find(rendered[overlay], kind, "arfm-mlflow" if kind == "Deployment" else None))
    assert object_problems(obj, kuberay_schemas) == []
    edit(obj)
    problems = object_problems(obj, kuberay_schemas)
    assert any(fragment in p for p in problems), problems


def _objs_edit(kind, edit, name=None):
    def apply(objs):
        edit(find(objs, kind, name))
    return apply


AGREEMENT_BREAKS = {
    "ray version": ("gpu", _objs_edit("RayService", lambda o: o["spec"]["rayClusterConfig"].update(
        rayVersion="2.59.0")), "rayVersion '2.59.0'"),
    "mlflow uri": ("local", _objs_edit("RayCluster", lambda o: _env(_container(o, "worker"), "MLFLOW_TRACKING_URI",
                                                                    "http://mlflow:5000")), "MLFLOW_TRACKING_URI"),
    "mlflow allowed hosts": ("gpu", _objs_edit("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0][
        "args"].__setitem__(-1, "--allowed-hosts=localhost:5000"), "arfm-mlflow"), "--allowed-hosts"),
    "mlflow port": ("gpu", _objs_edit("Service", lambda o: o["spec"]["ports"][0].update(targetPort=8080),
                                      "arfm-mlflow"), "port 8080"),
    "shared storage": ("local", _objs_edit("RayJob", lambda o: _env(_container(o, "worker"), "ARFM_HOME", "/data")),
                       "ARFM_HOME '/data'"),
    "grid: GPU workers": ("gpu", _objs_edit("RayJob", lambda o: o["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
                                            .update(maxReplicas=0)), "asks for 8 workers"),
    "grid: paper on CPUs": ("local", _objs_edit("RayJob", lambda o: o["spec"].update(
        entrypoint="python /opt/arfm/experiments/grid.py --preset paper")), "asks for 8 workers"),
    "grid: head schedules work": ("gpu", _objs_edit("RayJob", lambda o: o["spec"]["rayClusterSpec"]["headGroupSpec"][
        "rayStartParams"].update({"num-cpus": "4"})), "num-cpus"),
    "serve: cuda without a GPU": ("local", _objs_edit("RayService", lambda o: _serve(
        o, lambda c: c["applications"][0]["args"]["models"][0].update(device="cuda"))), "asks Ray for no GPU"),
    "serve: more GPUs than workers": ("gpu", _objs_edit("RayService", lambda o: o["spec"]["rayClusterConfig"][
        "workerGroupSpecs"][0].update(maxReplicas=2)), "model replicas need"),
    "image: pod user": ("gpu", _objs_edit("RayCluster", lambda o: o["spec"]["headGroupSpec"]["template"]["spec"][
        "securityContext"].update(runAsUser=1000)), "runAsUser 1000"),
    "image: tag": ("local", _objs_edit("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0].update(
        image="arfm:latest"), "arfm-mlflow"), "arfm:latest"),
}


@pytest.mark.parametrize("case", sorted(AGREEMENT_BREAKS))
def test_broken_agreement_fails(rendered, case):
    overlay, edit, fragment = AGREEMENT_BREAKS[case]
    objs = copy.deepcopy(rendered[overlay])
    edit(objs)
    problems = agreement_problems(objs)
    assert any(fragment in p for p in problems), problems


def _dockerfile_edit(instruction, old, new):
    def apply(ins):
        hits = [i for i in ins if i["instruction"] == instruction and old in i["value"]]
        assert hits, (instruction, old)
        hits[-1]["value"] = hits[-1]["value"].replace(old, new)
    return apply


DOCKERFILE_BREAKS = {
    "ray version": (_dockerfile_edit("ARG", "RAY_VERSION=2.60.0", "RAY_VERSION=2.59.0"), "ARG RAY_VERSION"),
    "root user": (_dockerfile_edit("USER", "10001:10001", "root"), "non-root"),
    "unpinned base": (_dockerfile_edit("ARG", "CPU_BASE=debian:bookworm-slim", "CPU_BASE=debian"), "CPU_BASE"),
    "gpu base without CUDA": (_dockerfile_edit("ARG", "GPU_BASE=nvidia/cuda:", "GPU_BASE=ubuntu:24.04#"),
                              "not a CUDA image"),
    "baked credential": (_dockerfile_edit("ENV", "PYTHONUNBUFFERED=1", "AWS_SECRET_ACCESS_KEY=abc"), "credential"),
    "install script bypassed": (_dockerfile_edit("RUN", "bash infra/install.sh", "pip install ."), "install.sh"),
}


@pytest.mark.parametrize("case", sorted(DOCKERFILE_BREAKS))
def test_broken_dockerfile_fails(rendered, case):
    edit, fragment = DOCKERFILE_BREAKS[case]
    objs = rendered["gpu"]
    instructions = dc.dockerfile(ROOT)
    assert dc.image_problems(ROOT, objs, instructions) + dc.ray_version_problems(objs, ROOT, instructions) == []
    edit(instructions)
    problems = dc.image_problems(ROOT, objs, instructions) + dc.ray_version_problems(objs, ROOT, instructions)
    assert any(fragment in p for p in problems), problems
