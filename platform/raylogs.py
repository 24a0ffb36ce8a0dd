"""Ray's own console output, kept for Ray's log files.

arfm's jobs print their own progress (one line per training job, a bar for preprocessing, stage summaries).
Ray Data's per-dataset banners, progress bars and "progress will be logged" lines, and the output of every
worker process, would interleave with them; they stay in Ray's logs (``ray logs``, the dashboard, or
``/tmp/ray/session_latest/logs``).
"""

from __future__ import annotations

import contextlib
import logging


def quiet_ray_data() -> None:
    """No Ray Data progress bars or execution banners on the console in this process."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


@contextlib.contextmanager
def ray_data_quiet():
    """:func:`quiet_ray_data` for the duration of a block, then the previous settings."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start, logger.level)
    quiet_ray_data()
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved[:2]
        logger.setLevel(saved[2])
