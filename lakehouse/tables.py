"""Create lakehouse tables from the catalog and make them reachable by name in Spark SQL."""

from __future__ import annotations

import logging

from lakehouse.catalog import TABLES, table
from lakehouse.settings import Settings

log = logging.getLogger(__name__)

# Written into every table: Delta checkpoints keep the log short for delta-rs readers, and
# the log retention matches the time travel that `maintain` keeps. Delta keeps min/max statistics
# of the table's keys only (``Table.keys``: what look-ups filter on, e.g. silver's duplicate
# look-up by event_time), not of its first 32 columns: collecting them for every column cost
# 2.2 s against 0.7 s for an append of 20,000 silver rows here (python -m bench.stats_columns).
# Tables made by an older version get the property from `maintain`.
def table_properties(settings: Settings, name: str) -> dict[str, str]:
    hours = settings.maintain.retention_hours
    return {
        "delta.checkpointInterval": "10",
        "delta.logRetentionDuration": f"interval {max(hours, 1)} hours",
        "delta.deletedFileRetentionDuration": f"interval {max(hours, 1)} hours",
        "delta.dataSkippingStatsColumns": ",".join(table(name).keys),
    }


def ensure_table(spark, settings: Settings, name: str) -> str:
    """Create ``name`` at its catalog path if missing (schema, partitioning); return the path."""
    spec = table(name)
    path = spec.path(settings)
    props = ", ".join(f"'{k}' = '{v}'" for k, v in table_properties(settings, name).items())
    partitioned = f"PARTITIONED BY ({', '.join(spec.partition_by)})" if spec.partition_by else ""
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS delta.`{path}` ({spec.schema}) USING DELTA {partitioned} "
        f"TBLPROPERTIES ({props})"
    )
    register_table(spark, settings, name)
    return path


# (session id, table name) -> path registered in that session's catalog.
_REGISTERED: dict[tuple[int, str], str] = {}


def register_table(spark, settings: Settings, name: str) -> None:
    """Point the name ``layer.name`` at this root's table (re-pointed if the root changed)."""
    spec = table(name)
    path = spec.path(settings)
    key = (id(spark), name)
    if _REGISTERED.get(key) == path:
        return
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {spec.layer}")
    if key in _REGISTERED:
        spark.sql(f"DROP TABLE IF EXISTS {name}")  # external table: drops the name, not the data
    spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{path}'")
    _REGISTERED[key] = path


def register_tables(spark, settings: Settings) -> list[str]:
    """Make every existing table reachable by name (``silver.flights``) in this session.

    The registry is the lakehouse root itself: any session made by ``build_spark`` re-derives the
    names from the tables' Delta logs, so names survive restarts without a metastore service
    (an embedded Derby metastore would lock out every second Spark process). Returns the names.
    """
    from delta.tables import DeltaTable

    registered = []
    for name, spec in TABLES.items():
        if DeltaTable.isDeltaTable(spark, spec.path(settings)):
            register_table(spark, settings, name)
            registered.append(name)
    return registered
