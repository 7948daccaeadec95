"""The code's layering (README "Code map"): the import contracts in ``.importlinter`` hold.

Shell (``lakehouse.app``) above the bench, the local infrastructure (``lakehouse.local``), the
dashboard, the jobs, ml and ingestion, above the core modules; the core imports nothing of the
shell, the infrastructure or the bench; no import cycle between the modules of any package.
"""

from pathlib import Path

from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold():
    assert lint_imports(config_filename=str(REPO / ".importlinter"), no_cache=True, no_logo=True) == 0
