"""Gold job: ``silver.flights`` -> live flights, anomalies, window and country counts, exactly once.

Run: ``opensky-lakehouse run gold [--once]`` or
``spark-submit $(opensky-lakehouse spark-conf) lakehouse/jobs/gold.py [--once]``.

One streaming query reads silver as a Delta stream; one handler, :func:`write_gold_batch`,
scores the new states (rules, then the scoring step) and writes every gold table. The job's
state lives in ``gold._state`` (Delta): each aircraft's last state (``kind = 'last'``, for
``position_jump`` across micro-batches and for the live view) and, for each window not closed
yet, each aircraft's states summed (``kind = 'window'``, see ``lakehouse.transforms.gold``);
each batch appends its state as the table's next ``generation`` (:func:`read_state`).
Windows close when their end is at or before the newest event time minus
``gold.window_watermark``; a state arriving for a window already closed is counted in the log
("late") and left out of the window tables (it is still in silver, live and anomalies).

Exactly once: every table is written once per (query id, batch id) (``lakehouse.jobs.delta_io``),
``gold.live_flights`` first (what the map shows), ``gold._state`` last, so a replayed batch
recomputes from the same state and skips the writes already committed. ``gold.live_flights`` is
overwritten once per batch: its versions are the history of the sky.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from functools import partial

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse.catalog import LAYER_CHECKPOINTS, checkpoint_path, table_path
from lakehouse.jobs.crash import crash_point
from lakehouse.jobs.delta_io import BatchWrites, app_id
from lakehouse.jobs.progress import JobSteps
from lakehouse.jobs.streams import interval, read_delta_stream, start_stream
from lakehouse.jvm import hadoop_path, read_text
from lakehouse.settings import Settings
from lakehouse.spark import compiled_expressions, merged_partitions
from lakehouse.table_setup import ensure_table
from lakehouse.transforms import gold as gold_steps

SOURCE = "silver.flights"
OUTPUTS = ("gold.live_flights", "gold.anomalies", "gold.window_stats", "gold.country_counts")
STATE = "gold._state"
log = logging.getLogger("lakehouse.jobs")
# Where the test-only crash hook (lakehouse.jobs.crash.CRASH_ENV) can stop a batch.
CRASH_POINTS = ("before_write", "after_live_flights", "after_anomalies", "after_window_stats",
                "after_country_counts", "after_state")


# Spark keeps this many micro-batches of its own offset and commit logs; the model log likewise.
MODEL_LOG_RETAINED = 100


# gold._state is appended to: each batch adds its state as one generation of rows (``generation``
# one more than the state it read), and the newest generation is the state. An append is one
# Delta commit; an overwrite must first list the files it removes, a rebuild of the table's
# Delta state (four Spark jobs: 0.5-0.8 s of a trigger at 1,000 states/s). Every
# STATE_GENERATIONS-th generation, and the first a process writes after reading a state of no
# generation (an older version's), is written as an overwrite that keeps only itself.
STATE_GENERATIONS = 20

# The state each gold app wrote last, kept between the micro-batches of one process:
# (state table, app) -> (batch id, its rows as written, materialized). The batch after it reads
# these instead of gold._state (a Delta snapshot, a scan and a cache: 0.7 s a trigger at 1,000
# states/s); any other batch (a process's first, a replay) reads the table. Only with a local
# master: the rows are a local checkpoint, blocks of executors that a cluster may lose.
_WRITTEN: dict[tuple[str, str], tuple[int, DataFrame]] = {}


def read_state(spark, settings: Settings, app: str, batch_id: int, release: list) -> DataFrame:
    """``gold._state`` as batch ``batch_id`` starts: the rows the previous batch of this process
    wrote, or else the table's newest generation (all of it when it predates generations: null),
    cached (appended to ``release``)."""
    path = table_path(settings, STATE)
    written = _WRITTEN.pop((path, app), None)
    if written is not None and written[0] == batch_id - 1:
        return written[1]
    table = spark.read.format("delta").load(path)
    state = table.where(F.col("generation").eqNullSafe(table.agg(F.max("generation")).scalar())).persist()
    release.append(state)
    return state


def state_write_mode(generation: int, read: int) -> str:
    """How the state of ``generation`` (read from a state of generation ``read``) is written:
    ``append``, or ``overwrite`` to drop the generations before it."""
    return "overwrite" if read == 0 or (generation - 1) % STATE_GENERATIONS == 0 else "append"


def batch_model(spark, settings: Settings, checkpoint: str, batch_id: int):
    """The model micro-batch ``batch_id`` scores with (``ml.scoring.Deployed``), the same on every
    attempt, resolved once here.

    The first attempt picks the newest (or pinned) artefact and records its version in
    ``<checkpoint>/models/<batch_id>`` before any table is written; a replay after a crash
    reads it back and loads that version, so a model published in between does not score half of
    the batch's tables. ``None``: no model yet, rules only (recorded too).
    """
    from ml.scoring import model_source

    source = model_source(settings)
    fs, path = hadoop_path(spark, f"{checkpoint}/models/{batch_id}")
    if fs.exists(path):
        recorded = json.loads(read_text(spark, fs, path))
        log.info("gold batch %d: replayed with the model it first ran with (%s)", batch_id,
                 recorded["model_version"] or "none, rules only")
        return source.version(spark, recorded["model_version"]) if recorded["model_version"] else None
    deployed = source.resolve(spark, settings)
    version = deployed.version if deployed is not None else None
    out = fs.create(path, True)
    try:
        out.write(bytearray(json.dumps({"model_version": version}).encode()))
    finally:
        out.close()
    _, old = hadoop_path(spark, f"{checkpoint}/models/{batch_id - MODEL_LOG_RETAINED}")
    if batch_id >= MODEL_LOG_RETAINED and fs.exists(old):
        fs.delete(old, False)
    return deployed


def is_legacy_state(state) -> bool:
    """Whether ``gold._state`` predates window partials (it has no ``reports`` column)."""
    return "reports" not in state.columns


def open_partials(state, window_duration: str):
    """The open windows' partials (``kind = 'window'``) of the state table ``state``.

    A state written before windows were kept as partials (:func:`is_legacy_state`) holds the
    open windows' states themselves: those are summed here, and the batch's overwrite of the
    state moves the table to the new schema.
    """
    windows = state.where("kind = 'window'")
    if not is_legacy_state(state):
        return windows.select(*gold_steps.PARTIAL_COLUMNS)
    return (windows.select(*gold_steps.SCORED_COLUMNS).transform(gold_steps.with_window(window_duration))
            .transform(gold_steps.window_partials))


def write_gold_batch(batch_df, batch_id: int, *, settings: Settings, checkpoint: str) -> None:
    """foreachBatch handler: one silver micro-batch -> every gold table, then the job state."""
    spark = batch_df.sparkSession
    step = JobSteps(spark, "gold", batch_id, settings.streaming.timings_log)
    release: list = []
    try:
        process_gold(batch_df, batch_id, settings=settings, app=app_id(spark, checkpoint, "gold"),
                     checkpoint=checkpoint, writes=BatchWrites(spark, checkpoint, batch_id), step=step,
                     release=release)
    finally:
        step.done()
        for df in reversed(release):  # the derived first: none left to re-plan over the base
            df.unpersist()


def process_gold(batch_df, batch_id: int, *, settings: Settings, app: str, checkpoint: str, writes: BatchWrites,
                 step: JobSteps, release: list) -> None:
    """Score silver states ``batch_df`` and write every gold table, then the job state, each once
    per (``app``, ``batch_id``); the model version is recorded under ``checkpoint``. DataFrames
    persisted here are appended to ``release`` for the caller to unpersist."""
    batch = prepare_gold(batch_df, batch_id, settings=settings, checkpoint=checkpoint, app=app, step=step,
                         release=release)
    if batch is not None:
        batch.write_live(writes, step)
        batch.write_rest(writes, step, release)


@dataclass
class GoldBatch:
    """One micro-batch's gold outputs, computed, not written yet (:func:`prepare_gold`).

    Written in two parts: :meth:`write_live` (``gold.live_flights``, first: what the map shows)
    and :meth:`write_rest` (anomalies, window and country counts, then, last, the job state).
    Only the live flights are planned before the first write; the windows' work waits for
    :meth:`write_rest`, so it does not delay the map.
    """

    settings: Settings
    app: str
    batch_id: int
    live_flights: DataFrame
    anomalies: DataFrame
    n_anomalies: int  # rows of ``anomalies``, known before the write (0: skipped)
    latest: DataFrame  # each aircraft's newest state, the state's ``kind = 'last'`` rows
    windowed: DataFrame  # the batch's states with their window, for windows still open
    n_late: int  # states for windows an earlier batch closed (left out; counted for the log)
    open_windows: DataFrame  # the state's open windows' partials
    closes: bool  # whether a window closes in this batch
    newest: object  # the newest event time seen, this batch included
    generation: int  # of the state read (0: none, or from before generations); this batch writes the next
    migrate: bool
    message: str
    cached: list  # the DataFrames persisted for this batch (all read gold._state): released before its write

    def _write(self, writes: BatchWrites, step: JobSteps, name: str, df, **kwargs) -> None:
        step(f"write {name.split('.', 1)[1]}")
        writes(df, table_path(self.settings, name), self.app, **kwargs)

    def write_live(self, writes: BatchWrites, step: JobSteps) -> None:
        crash_point("gold", self.batch_id, "before_write")
        self._write(writes, step, "gold.live_flights", self.live_flights, mode="overwrite")
        crash_point("gold", self.batch_id, "after_live_flights")

    def write_rest(self, writes: BatchWrites, step: JobSteps, release: list) -> None:
        cfg = self.settings.gold
        step("window partials")
        partials = self.open_windows.unionByName(gold_steps.state_partials(self.windowed))
        buffer = gold_steps.merge_partials(partials).persist()
        release.append(buffer)
        self.cached.append(buffer)
        is_closed = gold_steps.closed(gold_steps.before(self.newest, cfg.window_watermark))
        closing = buffer.where(is_closed)
        still_open = buffer.where(~is_closed).withColumn("kind", F.lit("window"))
        state = (self.latest.withColumn("kind", F.lit("last"))
                 .unionByName(still_open, allowMissingColumns=True).select(*gold_steps.STATE_ROW_COLUMNS))
        # An append of no rows is still a Delta commit (0.2-0.9 s each): skipped. Most batches
        # flag nothing and close no window (one closes every window_duration).
        for name, df, rows in (("gold.anomalies", self.anomalies, self.n_anomalies),
                               ("gold.window_stats", gold_steps.window_stats(closing), self.closes),
                               ("gold.country_counts", gold_steps.country_counts(closing), self.closes)):
            if rows:
                self._write(writes, step, name, df)
            crash_point("gold", self.batch_id, f"after_{name.split('.', 1)[1]}")
        # Last: the state a replay of this batch would otherwise read. Its rows are materialized
        # with their lineage cut and this batch's caches released first: a Delta write makes Spark
        # re-plan every cached plan that reads the table written (a file-listing job each: ~1 s a
        # batch at 1,000 states/s for caches that are never read again).
        step("state rows")
        generation = self.generation + 1
        rows = state.withColumn("generation", F.lit(generation).cast("bigint")).localCheckpoint(eager=True)
        for df in reversed(self.cached):
            df.unpersist()
        step("write state")
        path = table_path(self.settings, STATE)
        mode = "overwrite" if self.migrate else state_write_mode(generation, self.generation)
        writes(rows, path, self.app, mode=mode, options={"overwriteSchema": "true"} if self.migrate else None,
               compiled=True)  # a local checkpoint
        if not writes.replay and rows.sparkSession.sparkContext.master.startswith("local"):
            _WRITTEN[(path, self.app)] = (self.batch_id, rows)  # the table's newest generation now
        crash_point("gold", self.batch_id, "after_state")
        log.info(self.message + (f", {self.n_late} late for closed windows" if self.n_late else ""))


def prepare_gold(batch_df, batch_id: int, *, settings: Settings, checkpoint: str, app: str, step: JobSteps,
                 release: list) -> GoldBatch | None:
    """Score silver states ``batch_df`` against the job state and plan every gold output
    (None for an empty batch); the model version is recorded under ``checkpoint``. DataFrames
    persisted here are appended to ``release`` for the caller to unpersist."""
    spark = batch_df.sparkSession
    cfg = settings.gold
    step("read state")
    state = read_state(spark, settings, app, batch_id, release)
    last = state.where("kind = 'last'").select(*gold_steps.SCORED_COLUMNS)
    open_windows = open_partials(state, cfg.window_duration)
    migrate = is_legacy_state(state)
    if migrate:  # once, on a state of an older version (no generations either)
        prev_newest, open_end = last.agg(F.max("event_time")).first()[0], open_windows.agg(F.min("window_end")).first()[0]
        generation = None
    else:  # one pass: the newest event time, the open windows' earliest end, the state's generation
        prev_newest, open_end, generation = state.agg(
            F.max(F.when(F.col("kind") == "last", F.col("event_time"))),
            F.min(F.when(F.col("kind") == "window", F.col("window_end"))), F.max("generation")).first()
    step("model")
    from ml.scoring import scored_by

    scoring = scored_by(batch_model(spark, settings, checkpoint, batch_id), settings.ml)
    step("previous states, rules, scores")
    # One task, so one Python worker, for the scoring of a batch of up to ~100,000 states.
    with merged_partitions(spark):
        scored = batch_df.transform(gold_steps.score_states(last, settings.rules, scoring)).persist()
        release.append(scored)
        with compiled_expressions(spark):  # the window, rules and scoring: the same code every batch
            scored.count()
    windowed = scored.transform(gold_steps.with_window(cfg.window_duration))
    # Windows closed by an earlier batch take no more states ("late").
    in_time = gold_steps.on_time(prev_newest, cfg.window_watermark)
    summary = gold_steps.batch_summary(windowed, in_time).first()
    step.rows = summary["n"]
    if summary["n"] == 0:
        return None
    newest = max(t for t in (prev_newest, summary["newest"]) if t is not None)
    if prev_newest is not None:
        windowed = windowed.where(in_time)
    watermark = interval(spark, cfg.window_watermark)
    closes = gold_steps.window_closes(open_end, summary["window_end"], newest, watermark)
    # Read twice (live flights, then the state): computed once.
    retained = gold_steps.before(newest, cfg.state_retention)
    latest = last.unionByName(scored).transform(gold_steps.latest_states(retained)).persist()
    release.append(latest)
    message = f"gold batch {batch_id}: {summary['n']} states, {summary['anomalies']} anomalies, newest event {newest}"
    return GoldBatch(settings, app, batch_id,
                     live_flights=gold_steps.to_live_flights(latest, gold_steps.before(newest, cfg.live_window)),
                     anomalies=gold_steps.to_anomalies(scored), n_anomalies=summary["anomalies"], latest=latest,
                     windowed=windowed, n_late=summary["late"], open_windows=open_windows, closes=closes,
                     newest=newest, generation=generation or 0, migrate=migrate, message=message, cached=[state, scored, latest])


def start(spark, settings: Settings, once: bool = False) -> list:
    for name in (SOURCE, *OUTPUTS, STATE):
        ensure_table(spark, settings, name)
    checkpoint = checkpoint_path(settings, *LAYER_CHECKPOINTS["gold"])
    silver = read_delta_stream(spark, table_path(settings, SOURCE), settings.gold.max_files_per_trigger,
                               checkpoint)
    return [start_stream(silver, partial(write_gold_batch, settings=settings, checkpoint=checkpoint), name="gold",
                         checkpoint=checkpoint, every=settings.streaming.gold_trigger, once=once)]


if __name__ == "__main__":
    from lakehouse.jobs.runner import submit_main

    sys.exit(submit_main("gold", start))
