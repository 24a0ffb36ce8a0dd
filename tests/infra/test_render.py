"""The Python renderer (kustomize_render) against kustomize itself, where this machine has it, and its refusal of
kustomization fields it does not implement."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy_checks import REPO as ROOT
from kustomize_render import Unsupported, key, render

FOLDERS = ("base", "overlays/local", "overlays/gpu")


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("folder", FOLDERS)
def test_renderer_matches_kustomize(folder):
    cmd = kustomize_command()
    if cmd is None:
        pytest.skip("neither kustomize nor kubectl is installed: the renderer is compared with kustomize where "
                    "one is")
    out = subprocess.run([*cmd, str(ROOT / "infra" / "k8s" / folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs = {key(o): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {key(o): o for o in render(ROOT / "infra" / "k8s" / folder)}
    assert sorted(ours) == sorted(theirs)
    for k in ours:
        assert ours[k] == theirs[k], k


def write(folder: Path, kustomization: dict, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '1'}\n"


def test_renderer_refuses_what_it_does_not_implement(tmp_path):
    with pytest.raises(Unsupported, match="namePrefix"):
        render(write(tmp_path / "a", {"resources": ["cm.yaml"], "namePrefix": "p-"}, **{"cm.yaml": CM}))
    smp = write(tmp_path / "b", {"resources": ["cm.yaml"], "patches": [{"patch": "metadata: {name: a}\ndata: {x: '2'}",
                                                                         "target": {"kind": "ConfigMap"}}]},
                **{"cm.yaml": CM})
    with pytest.raises(Unsupported, match="strategic-merge"):
        render(smp)


def test_renderer_applies_patches_images_namespace_and_vars(tmp_path):
    deploy = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, annotations: {x: 'value $(X)'}}\n"
              "spec:\n  template:\n    spec:\n      containers: [{name: c, image: 'arfm:1-cpu'}]\n")
    write(tmp_path / "base", {"resources": ["cm.yaml", "d.yaml"], "configurations": ["conf.yaml"],
                              "vars": [{"name": "X", "objref": {"apiVersion": "v1", "kind": "ConfigMap", "name": "a"},
                                        "fieldref": {"fieldpath": "data.x"}}]},
          **{"cm.yaml": CM, "d.yaml": deploy,
             "conf.yaml": "varReference: [{path: metadata/annotations/x, kind: Deployment}]\n"})
    overlay = write(tmp_path / "overlay", {
        "resources": ["../base"], "namespace": "arfm-test", "images": [{"name": "arfm", "newName": "reg/arfm"}],
        "patches": [{"target": {"kind": "ConfigMap", "name": "a"},
                     "patch": "- {op: replace, path: /data/x, value: '2'}"}]})
    objs = {o["kind"]: o for o in render(overlay)}
    assert objs["ConfigMap"]["data"]["x"] == "2" and objs["ConfigMap"]["metadata"]["namespace"] == "arfm-test"
    assert objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/arfm:1-cpu"
    assert objs["Deployment"]["metadata"]["annotations"]["x"] == "value 2"


def test_renderer_refuses_var_references_through_lists(tmp_path):
    folder = write(tmp_path / "a", {"resources": ["cm.yaml"], "configurations": ["conf.yaml"],
                                    "vars": [{"name": "X", "objref": {"kind": "ConfigMap", "name": "a"},
                                              "fieldref": {"fieldpath": "data.x"}}]},
                   **{"cm.yaml": CM, "conf.yaml": "varReference: [{path: data/x/items, kind: ConfigMap}]\n"})
    (folder / "cm.yaml").write_text(CM.replace("data: {x: '1'}", "data: {x: ['1']}"))
    with pytest.raises(Unsupported, match="varReference"):
        render(folder)
