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
# Tables made by an older version get the properties from `maintain`.
#
# Delta writes a checkpoint inside the commit that reaches it, and the tables every micro-batch
# commits to reach it in the same trigger: at one checkpoint per 10 commits, every 10th trigger
# paid ~0.9 s per table (+4.5 s, a trigger's p95 at 1,000 states/s). Those tables checkpoint every
# 100 commits (once in ~17 minutes at 10 s triggers). The dashboard follows gold.live_flights with
# update_incremental (new commits only); a cold load 99 commits past a checkpoint (time travel)
# takes ~75 ms against ~15 ms (docs/scaling.md).
EVERY_BATCH_TABLES = ("bronze.opensky_states", "silver.flights", "silver._dedup_stats", "gold.live_flights",
                      "gold._state")
EVERY_BATCH_CHECKPOINT_INTERVAL, CHECKPOINT_INTERVAL = 100, 10


def checkpoint_interval(name: str) -> int:
    """Commits between Delta checkpoints of the table ``name``."""
    return EVERY_BATCH_CHECKPOINT_INTERVAL if name in EVERY_BATCH_TABLES else CHECKPOINT_INTERVAL


LIVE_TABLE = "gold.live_flights"


def retention_hours(settings: Settings, name: str, hours: float | None = None) -> float:
    """Hours of time travel the table ``name`` keeps: ``hours`` (default
    ``maintain.retention_hours``), and at most ``maintain.live_retention_hours`` for
    :data:`LIVE_TABLE` (a whole snapshot per version)."""
    hours = settings.maintain.retention_hours if hours is None else hours
    return min(hours, settings.maintain.live_retention_hours) if name == LIVE_TABLE else hours


def table_properties(settings: Settings, name: str) -> dict[str, str]:
    hours = retention_hours(settings, name)
    return {
        "delta.checkpointInterval": str(checkpoint_interval(name)),
        "delta.logRetentionDuration": f"interval {max(hours, 1)} hours",
        "delta.deletedFileRetentionDuration": f"interval {max(hours, 1)} hours",
        "delta.dataSkippingStatsColumns": ",".join(table(name).keys),
    }


# Columns whose type changed since older versions wrote them: table -> {column: expression over
# the old table giving the new column}. Bronze and the quarantine keep Kafka's bytes as binary
# (text could not hold bytes that are not UTF-8); `maintain` rewrites such a table once.
MIGRATIONS = {
    "bronze.opensky_states": {"key": "CAST(key AS BINARY)", "value": "CAST(value AS BINARY)"},
    "silver.quarantine": {"value": "CAST(value AS BINARY)", "value_text": "value"},
}


# Nullable columns added to a table after its first release (last in its catalog schema): a table
# that lacks them gets them in place when a job starts (ALTER TABLE ADD COLUMNS: one metadata
# commit, no rewrite; older rows read null).
ADDED_COLUMNS = {
    "gold.live_flights": ("ml_reason",),
    "gold.anomalies": ("ml_reason",),
    "gold._state": ("ml_reason", "generation"),
}


def add_missing_columns(spark, settings: Settings, name: str) -> list[str]:
    """Add the :data:`ADDED_COLUMNS` the existing table ``name`` lacks; returns them."""
    from delta.tables import DeltaTable

    path = table(name).path(settings)
    if name not in ADDED_COLUMNS or not DeltaTable.isDeltaTable(spark, path):
        return []
    have = set(spark.read.format("delta").load(path).columns)
    missing = [c for c in ADDED_COLUMNS[name] if c not in have]
    if missing:
        types = {f.name: f.dataType.simpleString() for f in spark.createDataFrame([], table(name).schema).schema}
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({', '.join(f'{c} {types[c]}' for c in missing)})")
        log.info("%s: added column(s) %s (null in the rows written before)", name, ", ".join(missing))
    return missing


def outdated_columns(spark, settings: Settings, name: str) -> list[str]:
    """The columns of the existing table ``name`` whose type (or absence) differs from the catalog
    and that :data:`MIGRATIONS` can rewrite; empty when none or no such table."""
    from delta.tables import DeltaTable

    if name not in MIGRATIONS or not DeltaTable.isDeltaTable(spark, table(name).path(settings)):
        return []
    have = {f.name: f.dataType for f in spark.read.format("delta").load(table(name).path(settings)).schema}
    want = {f.name: f.dataType for f in spark.createDataFrame([], table(name).schema).schema}
    return [c for c in MIGRATIONS[name] if have.get(c) != want[c]]


def migrate_table(spark, settings: Settings, name: str) -> list[str]:
    """Rewrite ``name`` with the catalog's column types (one overwrite; older versions stay in
    its history with the old schema); returns the columns rewritten."""
    columns = outdated_columns(spark, settings, name)
    if columns:
        path = table(name).path(settings)
        old = spark.read.format("delta").load(path)
        new = old.selectExpr(*(f"{MIGRATIONS[name][c]} AS `{c}`" if c in columns else f"`{c}`"
                               for c in table(name).columns))
        new.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)
        log.info("%s: columns %s rewritten as the catalog types them", name, ", ".join(columns))
    return columns


def ensure_table(spark, settings: Settings, name: str) -> str:
    """Create ``name`` at its catalog path if missing (schema, partitioning); return the path.

    An existing table written by an older version with columns of another type stops the job
    here, with what to do (run ``maintain`` once), before any micro-batch could fail on it.
    """
    spec = table(name)
    path = spec.path(settings)
    outdated = outdated_columns(spark, settings, name)
    if outdated:
        raise RuntimeError(
            f"{name} at {path} was written by an older version ({', '.join(outdated)} not as this version "
            f"types them): stop the jobs and run `opensky-lakehouse maintain --table {name}` once to rewrite it "
            "(README, Upgrading)")
    add_missing_columns(spark, settings, name)
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
