"""infra/install-postgres.sh (run by ``bash infra/install.sh --dev``): it installs Debian's postgresql package
where no server is installed, and nothing where one is, so a second run is a no-op that succeeds; without apt-get
(or root) it fails saying what to install. apt-get and sudo are stand-ins here that record their arguments, and
the one for ``apt-get install`` puts an initdb where Debian's package would."""

import os
import stat
import subprocess
from pathlib import Path

from deploy_checks import REPO

SCRIPT = REPO / "infra" / "install-postgres.sh"

APT_GET = """#!/bin/sh
echo "apt-get $*" >> "$CALLS"
case " $* " in *" install "*postgresql*) mkdir -p "$POSTGRES_ROOT/17/bin" && touch "$POSTGRES_ROOT/17/bin/initdb";; esac
"""


def stub_bin(tmp_path: Path, **scripts: str) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(stat.S_IRWXU)
    return folder


def run(tmp_path: Path, path: str, root: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    calls = tmp_path / "calls"
    calls.touch()
    env = {"PATH": path, "POSTGRES_ROOT": str(root), "CALLS": str(calls), "HOME": str(tmp_path)}
    out = subprocess.run(["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    return out, calls.read_text().splitlines()


def test_installs_postgresql_once(tmp_path):
    stubs = stub_bin(tmp_path, **{"apt-get": APT_GET, "sudo": '#!/bin/sh\nexec "$@"\n'})
    root = tmp_path / "postgresql"
    first, calls = run(tmp_path, f"{stubs}:/usr/bin:/bin", root)
    assert first.returncode == 0, first.stderr
    assert calls[0] == "apt-get update -qq"
    assert calls[1].startswith("apt-get install -y") and calls[1].split()[-1] == "postgresql"
    assert (root / "17" / "bin" / "initdb").exists()
    again, calls = run(tmp_path, f"{stubs}:/usr/bin:/bin", root)
    assert again.returncode == 0, again.stderr
    assert len(calls) == 2, "a second run called apt-get again"
    assert "present" in again.stdout


def test_an_install_without_initdb_fails(tmp_path):
    stubs = stub_bin(tmp_path, **{"apt-get": '#!/bin/sh\necho "apt-get $*" >> "$CALLS"\n',
                                  "sudo": '#!/bin/sh\nexec "$@"\n'})
    out, _ = run(tmp_path, f"{stubs}:/usr/bin:/bin", tmp_path / "postgresql")
    assert out.returncode == 1 and "no " in out.stderr and "initdb" in out.stderr


def test_without_apt_get_it_says_what_to_install(tmp_path):
    bash_only = stub_bin(tmp_path)
    for tool in ("bash", "id", "ls", "tr"):
        os.symlink(f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else f"/bin/{tool}", bash_only / tool)
    out, _ = run(tmp_path, str(bash_only), tmp_path / "postgresql")
    assert out.returncode == 1
    assert "apt-get is not available" in out.stderr and "PostgreSQL 13 or newer" in out.stderr
