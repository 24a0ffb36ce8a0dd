"""Suite-wide settings: one intra-op thread per test process.

The models under test are tiny; on a 2-core machine two OpenMP threads per op spin against each other (and
against Ray workers started by other tests) and make small matrix products many times slower.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
