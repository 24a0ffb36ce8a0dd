"""Optional estimators report why they are unavailable, and the suite fails on a missing one unless told not to."""

import pytest

from arfm.evaluate.estimators import ALLOW_MISSING_ENV, Availability, choose, probe


def test_probe_keeps_the_import_error():
    missing = probe("nothing", ("json", "arfm_no_such_module_here"))
    assert not missing and "import arfm_no_such_module_here failed: ModuleNotFoundError" in missing.reason
    assert str(missing).startswith("nothing unavailable: ")
    assert probe("json", ("json",)) and probe("json", ("json",)).reason == ""


def test_auto_choice_names_the_fallback_and_the_reason():
    gone = Availability("Chordino", False, "ImportError: x")
    assert choose("auto", "chordino", "chroma-template", gone) == (
        "chroma-template", "chroma-template used because Chordino unavailable: ImportError: x")
    assert choose("auto", "chordino", "chroma-template", Availability("Chordino", True)) == ("chordino", None)
    assert choose("chordino", "chordino", "chroma-template", gone) == ("chordino", None)  # asked for: no fallback


def test_a_missing_estimator_fails_the_suite_unless_allowed(require_estimator, monkeypatch):
    gone = Availability("madmom", False, "ImportError: no madmom")
    monkeypatch.delenv(ALLOW_MISSING_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="ImportError: no madmom"):
        require_estimator(gone)
    monkeypatch.setenv(ALLOW_MISSING_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match="ImportError: no madmom"):
        require_estimator(gone)
    require_estimator(Availability("madmom", True))  # available: nothing happens
