"""Fixtures of the deployment tests: the rendered overlays and the KubeRay CRD schemas.

The CRDs of KubeRay v1.7.0 (ray-project/kuberay, ``ray-operator/config/crd/bases/``, Apache-2.0) are kept
gzipped in ``kuberay-crds/``, so a fresh clone validates offline; ``ARFM_KUBERAY_SCHEMAS`` names another folder
(``*.yaml`` or ``*.yaml.gz``), e.g. the CRDs of another KubeRay release. A folder without CRDs fails the tests
that need it, naming the path: the schema checks are the point of these tests, so they never skip.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # kustomize_render, k8s_checks, deploy_checks

from deploy_checks import OVERLAYS, REPO  # noqa: E402
from kustomize_render import render  # noqa: E402


@pytest.fixture(scope="session")
def kuberay_schemas() -> Path:
    path = Path(os.environ.get("ARFM_KUBERAY_SCHEMAS") or Path(__file__).parent / "kuberay-crds").resolve()
    if not sorted(path.glob("ray.io_*.yaml*")):
        pytest.fail(f"no KubeRay CRDs (ray.io_*.yaml or .yaml.gz) in {path}: ARFM_KUBERAY_SCHEMAS must name a "
                    "folder of them (tests/infra/kuberay-crds by default)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """``{overlay: objects}`` of every overlay in infra/k8s/overlays."""
    return {name: render(REPO / "infra" / "k8s" / "overlays" / name) for name in OVERLAYS}
