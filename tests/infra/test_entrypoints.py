"""What the manifests run exists: the RayJob's entrypoint is a command of this repository (run here with
``--help`` and ``--list``), and the RayService's import path names the Serve application builder, which accepts
the config's ``args`` and builds the deployments the config configures.

The import path is written once, in infra/k8s/base/serve-app.yaml, and is the one the serving package declares
(``arfm.serving.config.APP_IMPORT_PATH``). Where this checkout has no ``arfm.serving.app`` module yet, the tests
that import it skip and say so; any other path that does not import fails."""

import importlib
import importlib.util
import subprocess
import sys

import pytest

import deploy_checks as dc
import k8s_checks as kc

ROOT, OVERLAYS = dc.REPO, dc.OVERLAYS
SERVE_MODULE = "arfm.serving.app"  # the Serve application's module (serving/app.py)


def skip_without_serve_app() -> None:
    if importlib.util.find_spec(SERVE_MODULE) is None:
        pytest.skip(f"{SERVE_MODULE} is not in this checkout (serving/app.py is missing): the RayService's import "
                    "path is checked where the Serve application is present")


def job_command(objs) -> list[str]:
    """The RayJob's entrypoint as a command here: the image's project folder is this repository."""
    argv = dc.entrypoint(objs)
    assert argv[0] == "python", argv
    script = argv[1]
    assert script.startswith(dc.PROJECT_DIR + "/"), f"{script} is not under the image's {dc.PROJECT_DIR}"
    return [sys.executable, str(ROOT / script.removeprefix(dc.PROJECT_DIR + "/")), *argv[2:]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjob_entrypoint_runs(rendered, overlay, tmp_path):
    cmd = job_command(rendered[overlay])
    env = {"PATH": "/usr/bin:/bin", "ARFM_HOME": str(tmp_path), "HOME": str(tmp_path)}
    helped = subprocess.run([*cmd, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "--preset" in helped.stdout
    listed = subprocess.run([*cmd, "--list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr + listed.stdout
    preset = cmd[cmd.index("--preset") + 1]
    from arfm.study import load_study

    cells = load_study(ROOT / "experiments" / "study.yaml", preset).cells
    assert len(cells) > 0
    assert all(cell.name in listed.stdout for cell in cells), listed.stdout


def test_rayjob_entrypoint_check_fails_on_a_missing_script(rendered, tmp_path):
    objs = [dict(o) for o in rendered["gpu"]]
    job = next(o for o in objs if o["kind"] == "RayJob")
    objs[objs.index(job)] = {**job, "spec": {**job["spec"], "entrypoint": "python /opt/arfm/experiments/grids.py"}}
    cmd = job_command(objs)
    run = subprocess.run([*cmd, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "grids.py" in run.stderr


def import_path(rendered) -> str:
    paths = {app["import_path"] for objs in rendered.values()
             for obj in objs if obj["kind"] == "RayService" for app in kc.serve_config(obj)["applications"]}
    assert len(paths) == 1, f"the overlays serve different import paths: {paths}"
    return paths.pop()


def load_builder(path: str):
    module, _, attr = path.partition(":")
    if module == SERVE_MODULE:
        skip_without_serve_app()
    return getattr(importlib.import_module(module), attr)


def test_serve_import_path_is_the_one_in_serve_app_yaml(rendered):
    import yaml

    cm = yaml.safe_load((ROOT / "infra" / "k8s" / "base" / "serve-app.yaml").read_text())
    assert import_path(rendered) == cm["data"]["import_path"]
    # a placeholder never survives rendering
    assert all("$(" not in obj["spec"]["serveConfigV2"] for objs in rendered.values() for obj in objs
               if obj["kind"] == "RayService")


def test_serve_import_path_is_the_serving_packages(rendered):
    skip_without_serve_app()
    from arfm.serving.config import APP_IMPORT_PATH

    assert import_path(rendered) == APP_IMPORT_PATH


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_import_path_builds_the_configured_app(rendered, overlay):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app

    builder = load_builder(import_path(rendered))
    service = next(o for o in rendered[overlay] if o["kind"] == "RayService")
    for app_cfg in kc.serve_config(service)["applications"]:
        app = call_user_app_builder_with_args_if_necessary(builder, app_cfg.get("args", {}))
        built = build_app(app, name=app_cfg["name"])
        names = {d.name for d in built.deployments}
        configured = {d["name"] for d in app_cfg.get("deployments", [])}
        assert configured and configured <= names, f"configured {configured}, the application has {names}"


def test_serve_import_path_check_fails_on_a_wrong_path():
    with pytest.raises((ModuleNotFoundError, AttributeError)):
        load_builder("arfm.serving_app:build_app")
    with pytest.raises(AttributeError):
        load_builder("arfm.study:build_app")

