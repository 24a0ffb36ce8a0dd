"""Suite-wide settings: one intra-op thread per test process, and the rule for optional estimators.

The models under test are tiny; on a 2-core machine two OpenMP threads per op spin against each other (and
against Ray workers started by other tests) and make small matrix products many times slower.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def require_estimator():
    """``require_estimator(availability)``: a missing optional estimator (Chordino, madmom) fails the test with
    the import error; with ``ARFM_ALLOW_MISSING_ESTIMATORS=1`` (machines that cannot install them) it skips."""
    from arfm.evaluate.estimators import ALLOW_MISSING_ENV

    def check(availability) -> None:
        if availability:
            return
        if os.environ.get(ALLOW_MISSING_ENV) == "1":
            pytest.skip(f"{availability} ({ALLOW_MISSING_ENV}=1)")
        pytest.fail(f"{availability}. Install it with `bash infra/install.sh --dev`, or set {ALLOW_MISSING_ENV}=1 "
                    "to skip the tests that need it", pytrace=False)

    return check
