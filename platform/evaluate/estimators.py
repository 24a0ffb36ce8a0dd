"""Whether an optional estimator (Chordino, madmom) can run here, and if not, why.

:func:`probe` imports the estimator's modules once and keeps the exception: ``chordino_available()`` and
``madmom_available()`` return an :class:`Availability` that is true when the estimator imports and otherwise
carries the reason (``"ImportError: ..."``). A metric that falls back to its light stand-in records that
reason with its result, so a broken install shows up in ``per_sample.json``, the report notes and the
MLflow tags instead of silently changing the estimator.

The test suite treats a missing estimator as a failure with that reason; on a machine that cannot install
them, set ``ARFM_ALLOW_MISSING_ESTIMATORS=1`` to skip those tests instead (see the README).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache

ALLOW_MISSING_ENV = "ARFM_ALLOW_MISSING_ESTIMATORS"


@dataclass(frozen=True)
class Availability:
    name: str
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return f"{self.name}: available" if self.ok else f"{self.name} unavailable: {self.reason}"


@lru_cache(maxsize=None)
def probe(name: str, modules: tuple[str, ...]) -> Availability:
    """Import ``modules`` in order; the first exception (type and message) is the reason."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure is a reason to report, not to hide
            return Availability(name, False, f"import {module} failed: {type(exc).__name__}: {exc}")
    return Availability(name, True)


def choose(method: str, primary: str, fallback: str, available: Availability) -> tuple[str, str | None]:
    """Resolve ``method="auto"``: ``(primary, None)`` when it is available, else ``(fallback, why)``."""
    if method != "auto":
        return method, None
    if available:
        return primary, None
    return fallback, f"{fallback} used because {available}"


def reference_kind(kinds: set[str]) -> str:
    """``"labels"``, ``"audio"`` or ``"labels+audio"`` from the kinds of references seen."""
    return "+".join(sorted(kinds)) or "none"
