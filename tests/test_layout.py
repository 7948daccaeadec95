"""The code's layering (README "Code map"): the import contracts in ``.importlinter`` hold.

Shell (``lakehouse.app``) above the bench, the local infrastructure (``lakehouse.local``), the
dashboard, the jobs, ml and ingestion, above the core modules; the core imports nothing of the
shell, the infrastructure or the bench; no import cycle between the modules of any package.
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold():
    # A subprocess: import-linter configures logging in its process and disables every logger that
    # exists then, which would silence the log lines later tests of this run look for.
    result = subprocess.run([Path(sys.executable).with_name("lint-imports"), "--no-cache"], cwd=REPO,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_module_of_the_lakehouse_package_has_a_layer():
    """A new module or package under ``lakehouse/`` must be placed in the layers contract, or
    nothing would check what it imports."""
    layers = (REPO / ".importlinter").read_text().split("[importlinter:contract:layers]")[1].split("[importlinter:")[0]
    named = {m.strip() for line in layers.splitlines() for m in line.replace("|", ":").split(":")
             if m.strip().startswith("lakehouse.")}
    package = REPO / "lakehouse"
    modules = {f"lakehouse.{p.stem}" for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    modules |= {f"lakehouse.{p.parent.name}" for p in package.glob("*/__init__.py")}
    assert modules - named == set()
