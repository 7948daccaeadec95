"""Silver job: ``bronze.opensky_states`` -> ``silver.flights`` + ``silver.quarantine``, exactly once.

Run: ``opensky-lakehouse run silver [--once]`` or
``spark-submit $(opensky-lakehouse spark-conf) lakehouse/jobs/silver.py [--once]``.

One streaming query reads bronze as a Delta stream; one handler, :func:`write_silver_batch`,
writes both outputs of each micro-batch, so every bronze row is counted exactly once:
``bronze rows = silver.flights + silver.quarantine + duplicates dropped``. The duplicates
dropped per batch are kept in ``silver._dedup_stats`` (with the rows in and out), which
``opensky-lakehouse status`` sums.

Exactly once: each table is written once per (query id, batch id) (``lakehouse.jobs.delta_io``),
so a replayed batch skips what it already committed. The only state the batch reads is
``silver.flights`` (known keys) and ``silver._dedup_stats`` (the watermark, of earlier batches
only); ``silver.flights`` is written last, so a replay recomputes exactly what the first attempt
decided.

Deduplication: one row per (``icao24``, ``event_time``). The watermark is the newest event time
of earlier batches minus ``silver.dedup_watermark``; a record newer than it is looked up among
the silver keys since the watermark (bounded state: Delta skips older files by their event_time
statistics). A record older than the watermark is not looked up and is kept: a duplicate that
late is not recognised (counted per batch as ``unchecked_late_rows``).
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType, TimestampType

from lakehouse.catalog import LAYER_CHECKPOINTS, checkpoint_path, table, table_path
from lakehouse.jobs.crash import crash_point
from lakehouse.jobs.delta_io import BatchWrites, app_id
from lakehouse.jobs.progress import JobSteps
from lakehouse.jobs.streams import interval, read_delta_stream, start_stream
from lakehouse.settings import Settings
from lakehouse.spark import compiled_expressions
from lakehouse.table_setup import ensure_table
from lakehouse.transforms.silver import (
    batch_span,
    drop_duplicates,
    keys_to_look_up,
    parse_and_validate,
    to_flights,
    to_outputs,
    to_quarantine,
)

SOURCE = "bronze.opensky_states"
FLIGHTS = "silver.flights"
QUARANTINE = "silver.quarantine"
STATS = "silver._dedup_stats"
log = logging.getLogger("lakehouse.jobs")
# Where the test-only crash hook (lakehouse.jobs.crash.CRASH_ENV) can stop a batch.
CRASH_POINTS = ("before_write", "after_quarantine", "after_stats", "after_flights")


# Rows of a batch's flights per task and file written (see prepare_silver): a batch of 10,000 states
# is one file; at 10,000 states/s (600,000 rows a batch) each of 3 Kafka partitions is one task.
FLIGHT_ROWS_PER_FILE = 250_000
# A batch of at least this many valid rows is deduplicated with its expressions compiled. The
# flight columns hold the batch's processed_at as a literal, which Spark writes into the code, so
# their class is compiled anew every batch (~30 ms); compiled, a row costs ~0.75 us less (the
# deduplication of a million states 4.0-4.3 -> 3.2-3.5 s on 2 cores).
COMPILED_DEDUP_ROWS = 50_000

# The newest event time of the batches each silver app has committed, kept between the
# micro-batches of one process: (dedup stats table, app) -> (batch id, newest event time through
# that batch). The batch after the cached one needs no read of silver._dedup_stats (1.4 s a
# trigger at 1,000 states/s); any other batch (a process's first, a replay) reads the table.
_NEWEST: dict[tuple[str, str], tuple[int, datetime | None]] = {}

# The flights each silver app wrote last, kept between the micro-batches of one process:
# (flights table, app) -> (batch id, newest event time before that batch, its rows as written,
# materialized). The next batch looks its keys up in these instead of silver.flights (a Delta
# snapshot of the table just written and a scan: ~0.35-0.45 s of a 150,000-row batch's
# deduplication) when no batch before them holds an event time as new as its oldest
# (:func:`known_flights`). Only with a local master: the rows are a local checkpoint.
_WRITTEN: dict[tuple[str, str], tuple[int, datetime | None, DataFrame]] = {}


_SCHEMAS: dict[str, StructType] = {}


def literal_row(spark, ddl: str, values: tuple) -> DataFrame:
    """One row of ``values`` typed by the DDL column list ``ddl``, as literals planned in the JVM.

    ``createDataFrame`` of a Python list is a PythonRDD of pickled rows: every micro-batch then
    ran a task in a Python worker (its own daemon and workers, ~110 MB) to write one stats row.
    A timestamp is taken as ``createDataFrame`` takes it (naive: the process's local time)."""
    schema = _SCHEMAS.get(ddl)
    if schema is None:  # parsed once per DDL, not every micro-batch
        schema = _SCHEMAS[ddl] = StructType.fromJson(
            json.loads(spark._jvm.org.apache.spark.sql.types.StructType.fromDDL(ddl).json()))
    columns = []
    for field, value in zip(schema.fields, values, strict=True):
        if isinstance(field.dataType, TimestampType) and value is not None:
            column = F.timestamp_micros(F.lit(field.dataType.toInternal(value)))
        else:
            column = F.lit(value).cast(field.dataType)
        columns.append(column.alias(field.name))
    return spark.range(1, numPartitions=1).select(*columns)


def known_flights(spark, settings: Settings, app: str, batch_id: int, since: datetime | None) -> DataFrame:
    """The silver flights batch ``batch_id`` looks its keys up in, for keys of event time
    ``since`` or later: the rows the previous batch of this process wrote when every batch
    before that one is older than ``since`` (so no other row of silver can share a key with the
    batch), else the table."""
    path = table_path(settings, FLIGHTS)
    written_batch, newest_before_it, rows = _WRITTEN.pop((path, app), (None, None, None))
    if written_batch == batch_id - 1 and since is not None and newest_before_it is not None and newest_before_it < since:
        return rows
    return spark.read.format("delta").load(path)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def newest_before(spark, settings: Settings, app: str, batch_id: int) -> datetime | None:
    """Newest event time of the batches before ``batch_id`` (None before any)."""
    path = table_path(settings, STATS)
    cached = _NEWEST.get((path, app))
    if cached is not None and cached[0] == batch_id - 1:
        return cached[1]
    stats = spark.read.format("delta").load(path)
    earlier = stats.where(~((F.col("app_id") == app) & (F.col("batch_id") >= batch_id)))
    return earlier.agg(F.max("max_event_time")).first()[0]


def write_silver_batch(batch_df, batch_id: int, *, settings: Settings, checkpoint: str) -> None:
    """foreachBatch handler: one bronze micro-batch -> flights, quarantine, dedup stats."""
    spark = batch_df.sparkSession
    step = JobSteps(spark, "silver", batch_id, settings.streaming.timings_log)
    release: list = []
    try:
        process_silver(batch_df, batch_id, settings=settings, app=app_id(spark, checkpoint, "silver"),
                       writes=BatchWrites(spark, checkpoint, batch_id), step=step, release=release)
    finally:
        step.done()
        for df in reversed(release):  # the derived first: none left to re-plan over the base
            df.unpersist()


@dataclass
class SilverBatch:
    """One micro-batch's silver outputs, computed, not written yet (:func:`prepare_silver`).

    Written in two parts: :meth:`write_side_tables` (quarantine, dedup stats) and then, last,
    :meth:`write_flights`, the state the next attempt reads. ``flights`` is persisted (a local
    checkpoint), for gold to read in the same trigger.
    """

    settings: Settings
    app: str
    batch_id: int
    quarantine: DataFrame
    n_in: int
    n_quarantine: int
    n_flights: int
    n_late: int  # valid rows older than the dedup horizon (not looked up)
    flights: DataFrame
    newest: datetime | None  # through this batch
    newest_here: datetime | None  # of this batch
    newest_before: datetime | None  # of the batches before this one

    @property
    def duplicates(self) -> int:
        return self.n_in - self.n_quarantine - self.n_flights

    def write_side_tables(self, writes: BatchWrites, step: JobSteps) -> None:
        crash_point("silver", self.batch_id, "before_write")
        if self.n_quarantine:  # an append of no rows would still be a Delta commit
            step("write quarantine")
            writes(self.quarantine, table_path(self.settings, QUARANTINE), self.app)
        crash_point("silver", self.batch_id, "after_quarantine")
        step("batch summary")
        stats = literal_row(
            self.quarantine.sparkSession, table(STATS).ddl(without=("committed_at",)),
            (self.app, self.batch_id, self.n_in, self.n_flights, self.n_quarantine, self.duplicates, self.n_late,
             self.newest_here),
        ).withColumn("committed_at", F.current_timestamp())
        step("write dedup stats")
        writes(stats, table_path(self.settings, STATS), self.app)
        _NEWEST[(table_path(self.settings, STATS), self.app)] = (self.batch_id, self.newest)
        crash_point("silver", self.batch_id, "after_stats")

    def write_flights(self, writes: BatchWrites, step: JobSteps) -> None:
        step("write flights")
        path = table_path(self.settings, FLIGHTS)
        writes(self.flights, path, self.app, compiled=True)  # a local checkpoint
        if not writes.replay and self.flights.sparkSession.sparkContext.master.startswith("local"):
            _WRITTEN[(path, self.app)] = (self.batch_id, self.newest_before, self.flights)
        crash_point("silver", self.batch_id, "after_flights")
        log.info(f"silver batch {self.batch_id}: {self.n_in} bronze rows -> {self.n_flights} flights, "
                 f"{self.n_quarantine} quarantined, {self.duplicates} duplicates dropped"
                 + (f", {self.n_late} too late to check" if self.n_late else ""))


def process_silver(batch_df, batch_id: int, *, settings: Settings, app: str, writes: BatchWrites, step: JobSteps,
                   release: list):
    """Parse, validate and deduplicate bronze rows ``batch_df``; write quarantine, dedup stats,
    then flights, each once per (``app``, ``batch_id``). Returns the flights written (persisted:
    the caller unpersists everything appended to ``release``; the flights are a local checkpoint),
    or None for an empty batch."""
    batch = prepare_silver(batch_df, batch_id, settings=settings, app=app, step=step, release=release)
    if batch is None:
        return None
    batch.write_side_tables(writes, step)
    batch.write_flights(writes, step)
    return batch.flights


def prepare_silver(batch_df, batch_id: int, *, settings: Settings, app: str, step: JobSteps,
                   release: list) -> SilverBatch | None:
    """Parse, validate and deduplicate bronze rows ``batch_df`` (None for an empty batch).
    DataFrames persisted here are appended to ``release`` for the caller to unpersist."""
    spark = batch_df.sparkSession
    step("parse and validate")
    parsed = batch_df.transform(parse_and_validate(settings.validation)).transform(to_outputs).persist()
    release.append(parsed)
    with compiled_expressions(spark):  # parsing and validation: the same code every batch
        counts = {r["good"]: r["count"] for r in parsed.groupBy(F.col("reason").isNull().alias("good"))
                  .count().collect()}
    n_in, n_quarantine = sum(counts.values()), counts.get(False, 0)
    step.rows = n_in
    if n_in == 0:
        return None
    step("dedup horizon")
    before = newest_before(spark, settings, app, batch_id)
    horizon = None if before is None else before - interval(spark, settings.silver.dedup_watermark)
    good = to_flights(parsed)  # from the cached rows: a projection, cheaper than a second cache
    # One pass: the event-time span, and the rows too old to look up (counted for the dedup stats).
    span = batch_span(good, horizon).first()
    # The silver keys since the batch's oldest event time (10 minutes of watermark are 600,000
    # rows at 1,000 states/s; the span is a minute or so).
    since = None if horizon is None or span["lo"] is None else max(horizon, span["lo"])
    known = keys_to_look_up(known_flights(spark, settings, app, batch_id, since), horizon, span["lo"], span["hi"])
    step("deduplicate")
    # Materialized with its lineage cut: writing silver.flights below re-caches every cached plan
    # that reads the table, and the flights of this batch read it (the known keys); recomputed
    # after the write they would all be duplicates of themselves. The pipeline hands them to gold.
    # Deduplication shuffles only the keys, so the rows keep the batch's partitions (one per Kafka
    # partition or bronze file): merged to about FLIGHT_ROWS_PER_FILE rows each, as a shuffle
    # (adaptively coalesced) used to, so that a small batch is one file of silver.flights, not many.
    n_good = counts.get(True, 0)
    tasks = max(1, -(-n_good // FLIGHT_ROWS_PER_FILE))
    with compiled_expressions(spark) if n_good >= COMPILED_DEDUP_ROWS else nullcontext():
        flights = good.transform(drop_duplicates(known, horizon)).coalesce(tasks).localCheckpoint(eager=True)
    n_flights = flights.count()
    return SilverBatch(settings, app, batch_id, to_quarantine(parsed), n_in, n_quarantine, n_flights, span["late"],
                       flights, _later(before, span["hi"]), span["hi"], before)


def start(spark, settings: Settings, once: bool = False) -> list:
    for name in (SOURCE, FLIGHTS, QUARANTINE, STATS):
        ensure_table(spark, settings, name)
    checkpoint = checkpoint_path(settings, *LAYER_CHECKPOINTS["silver"])
    bronze = read_delta_stream(spark, table_path(settings, SOURCE), settings.silver.max_files_per_trigger,
                               checkpoint)
    return [start_stream(bronze, partial(write_silver_batch, settings=settings, checkpoint=checkpoint), name="silver",
                         checkpoint=checkpoint, every=settings.streaming.silver_trigger, once=once)]


if __name__ == "__main__":
    from lakehouse.jobs.runner import submit_main

    sys.exit(submit_main("silver", start))
