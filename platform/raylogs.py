"""Ray's own console output, kept for Ray's log files.

arfm's jobs print their own progress (one line per training job, a bar for preprocessing, stage summaries).
Ray Data's per-dataset banners, progress bars and "progress will be logged" lines, and the output of every
worker process, would interleave with them; they stay in Ray's logs (``ray logs``, the dashboard, or
``/tmp/ray/session_latest/logs``).
"""

from __future__ import annotations

import contextlib
import logging


def _console_handlers() -> list[logging.Handler]:
    """The handlers of Ray Data's logger that write to the console (its session log file is kept as is)."""
    import ray.data  # noqa: F401 - configures Ray Data's loggers

    return [h for h in logging.getLogger("ray.data").handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            and "File" not in type(h).__name__]


def quiet_ray_data() -> None:
    """No Ray Data progress bars, execution banners or warnings on the console in this process: only errors.
    Everything still goes to Ray Data's log file of the session."""
    from ray.data import DataContext

    for h in _console_handlers():
        h.setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


@contextlib.contextmanager
def ray_data_quiet():
    """:func:`quiet_ray_data` for the duration of a block, then the previous settings."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    handlers = [(h, h.level) for h in _console_handlers()]
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start)
    quiet_ray_data()
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        for h, level in handlers:
            h.setLevel(level)
