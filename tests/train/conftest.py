"""Shared fixtures for the trainer tests: one light Ray instance and one private ARFM_HOME for tests/train.

Session-scoped (set up when the first test here asks for them, torn down at the end): every Ray Train start
costs tens of seconds on 2 cores and the first one in a fresh Ray instance more (Ray Data and Ray Train spawn
their helper actors once), so the modules of tests/train share them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # fake_task.py (shipped to Ray workers by value)


@pytest.fixture(scope="session")
def arfm_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("arfm_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARFM_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield home


@pytest.fixture(scope="session")
def ray_local(arfm_home):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
