"""Render a kustomization the way ``kustomize build`` does, for the features ``infra/k8s`` uses.

The kustomize binary is not packaged for Debian (bookworm's kubernetes-client embeds kustomize 2.0, which has no
components or replacements) and a Go build of it is not worth a toolchain in every test run, so the tests render
with this instead. Where ``kustomize`` or ``kubectl`` is on the PATH, a test checks that both render the same
objects. Supported, in kustomize's order:

- ``resources`` (YAML files and kustomization folders), then ``components`` in order, each applying its own
  patches and replacements to everything accumulated so far;
- ``patches`` (RFC 6902 JSON patches, inline or from a file, with a ``target`` of regular expressions),
  ``namespace``, ``images`` (``newName`` / ``newTag`` on every container list at any depth), ``replacements``
  (whole nodes, with ``options.create``);
- ``vars`` with ``configurations`` (``varReference``), substituted once, in the top-level build.

Anything else in a kustomization file raises :class:`Unsupported`, so the renderer never silently ignores a field.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED = {"apiVersion", "kind", "resources", "components", "patches", "namespace", "images", "replacements",
             "vars", "configurations"}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "PriorityClass", "IngressClass"}

Obj = dict[str, Any]


class Unsupported(ValueError):
    """The kustomization uses a field this renderer does not implement."""


def render(folder: str | Path) -> list[Obj]:
    """The objects ``kustomize build folder`` prints (in resource order; kustomize sorts them by kind)."""
    objs, variables, var_refs = _build(Path(folder))
    _substitute_vars(objs, variables, var_refs)
    return objs


def key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


def _kustomization(folder: Path) -> Obj:
    for name in KUSTOMIZATION_FILES:
        if (folder / name).is_file():
            data = yaml.safe_load((folder / name).read_text()) or {}
            unknown = sorted(set(data) - SUPPORTED)
            if unknown:
                raise Unsupported(f"{folder / name}: {unknown} not supported by this renderer")
            return data
    raise FileNotFoundError(f"no kustomization file in {folder}")


def _build(folder: Path) -> tuple[list[Obj], list[Obj], list[Obj]]:
    k = _kustomization(folder)
    objs: list[Obj] = []
    variables: list[Obj] = list(k.get("vars", []))
    var_refs: list[Obj] = []
    for entry in k.get("resources", []):
        path = folder / entry
        if path.is_dir():
            sub, sub_vars, sub_refs = _build(path)
            objs += sub
            variables += sub_vars
            var_refs += sub_refs
        else:
            objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for entry in k.get("components", []):
        comp = _kustomization(folder / entry)
        if comp.get("kind") != "Component":
            raise Unsupported(f"{folder / entry} is listed under components but is a {comp.get('kind')}")
        objs, comp_vars, comp_refs = _apply(folder / entry, comp, objs)
        variables += comp_vars
        var_refs += comp_refs
    objs, own_vars, own_refs = _apply(folder, {**k, "resources": [], "components": [], "vars": []}, objs)
    return objs, variables, var_refs + own_refs


def _apply(folder: Path, k: Obj, objs: list[Obj]) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """One kustomization's (or component's) own resources and transformers over ``objs``."""
    if k.get("kind") == "Component" and k.get("resources"):
        for entry in k["resources"]:
            objs = objs + [d for d in yaml.safe_load_all((folder / entry).read_text()) if d]
    objs = copy.deepcopy(objs)
    for p in k.get("patches", []):
        _patch(folder, p, objs)
    if k.get("namespace"):
        for obj in objs:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for obj in objs:
            _set_image(obj, image)
    for r in k.get("replacements", []):
        _replace(r, objs)
    refs: list[Obj] = []
    for entry in k.get("configurations", []):
        refs += (yaml.safe_load((folder / entry).read_text()) or {}).get("varReference", [])
    return objs, list(k.get("vars", [])), refs


def _matches(obj: Obj, target: Obj) -> bool:
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    have = {"group": group, "version": version, "kind": obj.get("kind", ""),
            "name": obj.get("metadata", {}).get("name", ""), "namespace": obj.get("metadata", {}).get("namespace", "")}
    for field, pattern in target.items():
        if field not in have:
            raise Unsupported(f"patch target field {field!r}")
        if not re.fullmatch(str(pattern), have[field]):
            return False
    return True


def _patch(folder: Path, p: Obj, objs: list[Obj]) -> None:
    text = p["patch"] if "patch" in p else (folder / p["path"]).read_text()
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise Unsupported("strategic-merge patches (only RFC 6902 JSON patches are rendered here)")
    hits = [i for i, obj in enumerate(objs) if _matches(obj, p.get("target", {}))]
    if not hits:
        raise ValueError(f"patch target {p.get('target')} matches no object")
    for i in hits:
        objs[i] = jsonpatch.apply_patch(objs[i], ops)


def _set_image(node: Any, image: Obj) -> None:
    if isinstance(node, dict):
        for field, value in node.items():
            if field in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    if isinstance(c, dict) and isinstance(c.get("image"), str):
                        c["image"] = _new_image(c["image"], image)
            else:
                _set_image(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_image(item, image)


def _new_image(ref: str, image: Obj) -> str:
    name, sep, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    if name != image["name"]:
        return ref
    name = image.get("newName", name)
    tag = image.get("newTag", tag)
    return f"{name}:{tag}" if tag else name


_SEGMENT = re.compile(r"\[(?P<k>[^=\]]+)=(?P<v>[^\]]*)\]|(?P<plain>[^.\[\]]+)")


def _path(field_path: str) -> list[str | tuple[str, str]]:
    parts: list[str | tuple[str, str]] = []
    for m in _SEGMENT.finditer(field_path):
        parts.append((m["k"], m["v"]) if m["k"] else m["plain"])
    return parts


def _get(node: Any, parts: list) -> Any:
    for part in parts:
        if isinstance(part, tuple):
            node = next(item for item in node if str(item.get(part[0])) == part[1])
        elif isinstance(node, list):
            node = node[int(part)]
        else:
            node = node[part]
    return node


def _put(node: Any, parts: list, value: Any, create: bool) -> None:
    for part in parts[:-1]:
        if isinstance(part, tuple):
            node = next(item for item in node if str(item.get(part[0])) == part[1])
        elif isinstance(node, list):
            node = node[int(part)]
        else:
            if part not in node:
                if not create:
                    raise KeyError(f"{part} (replacement target without options.create)")
                node[part] = {}
            node = node[part]
    last = parts[-1]
    if isinstance(last, tuple) or isinstance(node, list):
        raise Unsupported("a replacement target ending in a list item")
    if last not in node and not create:
        raise KeyError(f"{last} (replacement target without options.create)")
    node[last] = copy.deepcopy(value)


def _replace(r: Obj, objs: list[Obj]) -> None:
    src = r["source"]
    if set(src) - {"kind", "name", "group", "version", "namespace", "fieldPath"}:
        raise Unsupported(f"replacement source {src}")
    sel = {k: v for k, v in src.items() if k != "fieldPath"}
    sources = [o for o in objs if _matches(o, sel)]
    if len(sources) != 1:
        raise ValueError(f"replacement source {sel} matches {len(sources)} objects")
    value = _get(sources[0], _path(src.get("fieldPath", "metadata.name")))
    for t in r["targets"]:
        options = t.get("options", {})
        if set(options) - {"create"}:
            raise Unsupported(f"replacement options {options}")
        for obj in objs:
            if _matches(obj, t["select"]):
                for fp in t["fieldPaths"]:
                    _put(obj, _path(fp), value, options.get("create", False))


def _substitute_vars(objs: list[Obj], variables: list[Obj], refs: list[Obj]) -> None:
    values = {}
    for v in variables:
        ref = v["objref"]
        sel = {"kind": ref["kind"], "name": ref["name"]}
        found = [o for o in objs if _matches(o, sel)]
        if len(found) != 1:
            raise ValueError(f"var {v['name']}: objref {sel} matches {len(found)} objects")
        values[v["name"]] = _get(found[0], _path(v.get("fieldref", {}).get("fieldpath", "metadata.name")))
    pattern = re.compile(r"\$\((" + "|".join(map(re.escape, values)) + r")\)") if values else None
    for ref in refs:
        parts = ref["path"].split("/")
        for obj in objs:
            if ref.get("kind") and obj.get("kind") != ref["kind"]:
                continue
            try:
                current = _get(obj, parts)
            except KeyError:  # the object lacks the field: nothing to substitute
                continue
            except (ValueError, IndexError, TypeError):
                raise Unsupported(f"varReference path {ref['path']} (only paths of maps are rendered here)") from None
            if isinstance(current, str) and pattern is not None:
                _put(obj, parts, pattern.sub(lambda m: str(values[m[1]]), current), create=False)
