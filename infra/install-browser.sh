#!/usr/bin/env bash
# Debian's chromium and chromium-driver, which the listening page's browser test
# (tests/listening/test_page.py) drives through Selenium: installed with apt-get when missing, nothing done when
# both are installed. `bash infra/install.sh --dev` runs it; it runs on its own as well.
set -euo pipefail
missing=""
for pkg in chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -z "$missing" ]; then
  echo "install-browser.sh: chromium and chromium-driver are installed"
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v apt-get >/dev/null || { [ -n "$SUDO" ] && ! command -v sudo >/dev/null; }; then
  echo "install-browser.sh: the browser test needs the Debian packages$missing, and apt-get (as root) is not" \
       "available here: install them (binaries /usr/bin/chromium and /usr/bin/chromedriver) another way" >&2
  exit 1
fi
apt_get() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q "$@"; }
# A fresh machine has no package lists yet, and old lists can name versions the mirror no longer has: on a
# failed install, update the lists and try once more.
# shellcheck disable=SC2086  # $missing is a list of package names
apt_get install --no-install-recommends $missing || { apt_get update && apt_get install --no-install-recommends $missing; }
for bin in chromium chromedriver; do
  command -v "$bin" >/dev/null || { echo "install-browser.sh: $bin is not on PATH after the install" >&2; exit 1; }
done
echo "install-browser.sh: installed$missing ($(chromium --version 2>/dev/null || echo 'chromium'))"
