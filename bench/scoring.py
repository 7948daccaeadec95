"""Scoring: the pandas UDF of ``ml.scoring.add_ml_scores`` against the same model called directly.

Pending until ``ml.scoring`` is on this checkout (branch ``ml``); the seam is
:func:`run_section`, which the suite calls with the SparkSession of the throughput section and the
settings of its last run (whose ``silver.flights`` holds the rows to score).
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger("bench")


def ml_available() -> tuple[bool, str | None]:
    try:
        module = importlib.import_module("ml.scoring")
    except ModuleNotFoundError as exc:
        return False, f"ml.scoring is not on this branch yet ({exc.name})"
    if not hasattr(module, "add_ml_scores"):
        return False, "ml.scoring has no add_ml_scores"
    return True, None


def run_section(env, sizes, spark, settings) -> dict:
    ok, why = ml_available()
    if not ok:
        return {"status": "pending", "reason": why}
    return {"status": "pending", "reason": "ml.scoring found; the bench seam is not wired to its API yet"}
