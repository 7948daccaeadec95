"""Every notebook in notebooks/ runs top to bottom (nbclient) against a small lakehouse.

The lakehouse is written with Spark from small explicit frames (tests/gold_fixture.py) into the
catalog's tables (``ensure_table``), with several versions of gold.live_flights so that time
travel has something to travel through. The notebooks run in one Jupyter kernel (their own
SparkSession, a separate process); this test's session is the shared ``spark`` fixture.
Notebooks are committed without outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from lakehouse.catalog import TABLES, table
from lakehouse.table_setup import ensure_table
from tests import gold_fixture as gold
from tests.helpers import REPO

pytestmark = pytest.mark.integration

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_notebooks_are_committed_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "01_explore_silver_and_gold.ipynb", "02_time_travel.ipynb", "03_anomaly_review.ipynb",
        "04_quarantine_reasons.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"


def write(spark, settings, name: str, rows: list[dict], mode: str = "append") -> None:
    ensure_table(spark, settings, name)
    frame = gold.to_arrow(name, rows).to_pandas()
    df = spark.createDataFrame(frame, schema=table(name).schema) if rows else spark.createDataFrame([], table(name).schema)
    df.write.format("delta").mode(mode).save(table(name).path(settings))


@pytest.fixture
def small_lakehouse(spark, base_settings, tmp_path):
    settings = base_settings.replace(storage={"root": str(tmp_path / "lake")})
    write(spark, settings, "bronze.opensky_states", gold.bronze_rows())
    write(spark, settings, "silver.flights", gold.silver_rows())
    write(spark, settings, "silver.quarantine", gold.quarantine_rows())
    for version in range(1, 5):  # four gold batches
        write(spark, settings, "gold.live_flights", gold.live_rows(version), mode="overwrite")
        write(spark, settings, "gold.anomalies", gold.anomaly_rows(version))
        stats, countries = gold.window_rows(version)
        write(spark, settings, "gold.window_stats", stats)
        write(spark, settings, "gold.country_counts", countries)
    public = {n for n, t in TABLES.items() if not t.internal}
    assert public == {n for n in public if Path(table(n).path(settings), "_delta_log").is_dir()}
    return settings


def test_every_notebook_runs_top_to_bottom(small_lakehouse, tmp_path, monkeypatch):
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    for name in [k for k in os.environ if k.startswith("OPENSKY_LAKEHOUSE_")]:
        monkeypatch.delenv(name)
    for name, value in small_lakehouse.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    # One kernel (one Spark driver) for all notebooks: a JVM start per notebook costs minutes
    # on a small CI machine. Each notebook still builds its session itself from its first cell.
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path))
    try:
        for path in NOTEBOOKS:
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(tmp_path)}})
            try:
                client.execute()
            except CellExecutionError as exc:
                pytest.fail(f"{path.name} failed:\n{str(exc)[-3000:]}")
            outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
            assert "Traceback" not in outputs, path.name
            if path.name.startswith("02"):
                assert "looking back at v" in outputs  # history was read
            if path.name.startswith("04"):
                assert "malformed_json" in outputs and "invalid_icao24" in outputs
    finally:
        km.shutdown_kernel(now=False)
