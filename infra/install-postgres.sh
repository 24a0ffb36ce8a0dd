#!/usr/bin/env bash
# PostgreSQL's server binaries (initdb, pg_ctl, postgres, psql) from Debian's postgresql package, for the test of
# the MLflow tracking server on PostgreSQL (tests/infra/test_mlflow_server.py runs a cluster of its own on
# 127.0.0.1; the package's own cluster is not used). Run by `bash infra/install.sh --dev`.
# Idempotent: where a server is already installed (POSTGRES_ROOT/VERSION/bin/initdb) it installs nothing.
set -euo pipefail
ROOT=${POSTGRES_ROOT:-/usr/lib/postgresql}
installed() { compgen -G "$ROOT/*/bin/initdb" >/dev/null; }

if installed; then
  echo "PostgreSQL server present: $(ls -d "$ROOT"/*/bin/initdb | tr '\n' ' ')"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-postgres.sh: PostgreSQL's server (initdb, pg_ctl) is missing and apt-get is not available:" \
       "install PostgreSQL 13 or newer with its server binaries under $ROOT/VERSION/bin" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "install-postgres.sh: installing the postgresql package needs root: run as root or install sudo" >&2
    exit 1
  fi
  SUDO=(sudo)
fi
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
if ! installed; then
  echo "install-postgres.sh: apt-get installed postgresql but no $ROOT/*/bin/initdb exists" >&2
  exit 1
fi
echo "PostgreSQL server installed: $(ls -d "$ROOT"/*/bin/initdb | tr '\n' ' ')"
