"""Fixtures of the deployment tests: the rendered overlays and the KubeRay CRD schemas.

The CRDs live in the shared folder beside the repository (``../shared/schemas/kuberay``, as on every developer
machine and in CI); ``ARFM_KUBERAY_SCHEMAS`` names another folder. A missing folder fails the tests that need it,
naming the path: the schema checks are the point of these tests, so they never skip.
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
    path = Path(os.environ.get("ARFM_KUBERAY_SCHEMAS") or REPO.parent / "shared" / "schemas" / "kuberay").resolve()
    if not sorted(path.glob("ray.io_*.yaml")):
        pytest.fail(f"no KubeRay CRDs (ray.io_*.yaml) in {path}: the shared folder must sit beside the repository "
                    "(../shared/schemas/kuberay), or ARFM_KUBERAY_SCHEMAS must name the folder", pytrace=False)
    return path


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """``{overlay: objects}`` of every overlay in infra/k8s/overlays."""
    return {name: render(REPO / "infra" / "k8s" / "overlays" / name) for name in OVERLAYS}
