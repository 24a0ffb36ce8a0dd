"""Every package folder of the source tree is listed in pyproject's explicit `packages` (a `pip install .` would
silently drop a missing one), and `platform/` stays a namespace folder so the stdlib `platform` wins."""

import platform as stdlib_platform
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_declared():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared, dirs = set(tool["packages"]), tool["package-dir"]
    found = set()
    for name, folder in dirs.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    found |= set(dirs)  # the mapped roots themselves (arfm is a namespace package)
    assert found <= declared, f"not in pyproject packages: {sorted(found - declared)}"
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_is_not_shadowed():
    """A fresh interpreter with the repository root first on sys.path (what a Ray worker started from the
    working directory has) still imports Python's own ``platform``. Checked in a subprocess: in this process
    pytest imported ``platform`` long before the test ran."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import platform; "
            "print(platform.__file__); print(platform.system())")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    where, system = out.stdout.split()
    assert Path(where).resolve() == Path(stdlib_platform.__file__).resolve()
    assert not Path(where).resolve().is_relative_to(ROOT) and system in ("Linux", "Darwin", "Windows")
