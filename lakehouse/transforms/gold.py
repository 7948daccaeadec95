"""Gold: silver states scored by the rules (and later a model), live view, windows, anomalies.

Pure steps; the gold job (``lakehouse.jobs.gold``) reads silver and the job state and writes.

Scoring is a chain of ``df.transform`` steps (:func:`score_states`)::

    states -> with_previous_state(last) -> apply_rules(cfg) -> scoring -> flag_anomalies

``scoring`` adds ``anomaly_score``, ``ml_anomaly`` and ``model_version``; :func:`no_model` (rules
only) keeps them null/false until a model step is passed in its place.

Windows are tumbling on ``event_time``. While a window is open, the job keeps, per aircraft and
origin country, its states summed (:func:`window_partials`: reports, whether airborne or
flagged, sums and counts of the averaged values), merged batch by batch
(:func:`merge_partials`); a window is aggregated only once it is closed (its end at or before
the watermark), from those partials, so its counts are exact distinct aircraft and its averages
sum / count over all of its states, without keeping the states themselves.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakehouse.catalog import table
from lakehouse.records import PREVIOUS_STATE
from lakehouse.settings import RulesSettings
from lakehouse.transforms import built_once
from lakehouse.transforms.rules import apply_rules

LIVE = table("gold.live_flights")
ANOMALIES = table("gold.anomalies")
WINDOWS = table("gold.window_stats")
COUNTRIES = table("gold.country_counts")
STATE = table("gold._state")
# A scored state: the silver state columns plus rules, ML score and flags.
SCORED_COLUMNS = [c for c in LIVE.columns if c != "updated_at"]
# One open window's states of one aircraft, summed (the ``kind = 'window'`` rows of the state).
PARTIAL_KEYS = ["window_start", "window_end", "icao24", "origin_country"]
# A state row as the job computes it; writing it adds its ``generation`` (lakehouse.jobs.gold).
STATE_ROW_COLUMNS = [c for c in STATE.columns if c != "generation"]
PARTIAL_COLUMNS = [c for c in STATE_ROW_COLUMNS if c not in SCORED_COLUMNS or c in PARTIAL_KEYS][1:]
_AVERAGED = ("velocity", "vertical_rate", "baro_altitude")
UNKNOWN_COUNTRY = "unknown"

Step = Callable[[DataFrame], DataFrame]


def with_previous_state(last: DataFrame) -> Step:
    """Add ``prev_event_time/latitude/longitude/baro_altitude/velocity/true_track/on_ground``
    (``lakehouse.records.PREV_COLUMNS``): the same aircraft's state just before in event
    time, among this batch's states and ``last`` (each aircraft's last known state from earlier
    batches)."""

    def step(states: DataFrame) -> DataFrame:
        known_cols, new, lags, is_new = _previous_columns()
        both = states.withColumn("_new", new).unionByName(last.select(*known_cols), allowMissingColumns=True)
        # One projection (withColumns), not one re-analysed plan per column.
        return both.withColumns(lags).where(is_new).drop("_new")

    return step


@built_once
def _previous_columns() -> tuple[list[Column], Column, dict[str, Column], Column]:
    cols = ["icao24", *PREVIOUS_STATE]
    order = Window.partitionBy("icao24").orderBy("event_time", "_new", "partition", "offset")
    return ([F.col(c) for c in cols] + [F.lit(False).alias("_new")], F.lit(True),
            {f"prev_{c}": F.lag(c).over(order) for c in cols[1:]}, F.col("_new"))


def no_model(df: DataFrame) -> DataFrame:
    """The scoring step while no model is deployed: rules only."""
    return df.withColumns(_no_scores())


@built_once
def _no_scores() -> dict[str, Column]:
    return {"anomaly_score": F.lit(None).cast("double"), "ml_anomaly": F.lit(False),
            "model_version": F.lit(None).cast("string"), "ml_reason": F.lit(None).cast("string")}


def flag_anomalies(df: DataFrame) -> DataFrame:
    return df.withColumn("is_anomaly", _is_anomaly())


@built_once
def _is_anomaly() -> Column:
    return F.col("rule_anomaly") | F.coalesce("ml_anomaly", F.lit(False))


def score_states(last: DataFrame, rules: RulesSettings, scoring: Step = no_model) -> Step:
    """Silver states -> scored states (:data:`SCORED_COLUMNS`)."""
    return lambda states: (
        states.transform(with_previous_state(last))
        .transform(apply_rules(rules))
        .transform(scoring)
        .transform(flag_anomalies)
        .select(*_columns(tuple(SCORED_COLUMNS)))
    )


@built_once
def _columns(names: tuple[str, ...]) -> list[Column]:
    """``F.col`` of each name: a select of plain names builds them every time."""
    return [F.col(c) for c in names]


def to_anomalies(scored: DataFrame) -> DataFrame:
    """Flagged states only, as ``gold.anomalies``."""
    flagged, columns = _anomaly_columns()
    return scored.where(flagged).select(*columns)


@built_once
def _anomaly_columns() -> tuple[Column, list[Column]]:
    added = {"detected_at": F.current_timestamp(), "event_date": F.to_date("event_time")}
    return F.col("is_anomaly"), [added[c].alias(c) if c in added else F.col(c) for c in ANOMALIES.columns]


def latest_states(since: Column) -> Step:
    """One row per aircraft: its newest state, for aircraft seen at or after ``since``."""

    def step(states: DataFrame) -> DataFrame:
        number, newest = _newest_first()
        return (
            states.withColumn("_n", number)
            .where(newest & (F.col("event_time") >= since))
            .select(*_columns(tuple(SCORED_COLUMNS)))
        )

    return step


@built_once
def _newest_first() -> tuple[Column, Column]:
    newest_first = Window.partitionBy("icao24").orderBy(
        F.col("event_time").desc(), F.col("last_contact").desc_nulls_last(), F.col("latitude"), F.col("longitude"))
    return F.row_number().over(newest_first), F.col("_n") == 1


def to_live_flights(latest: DataFrame, since: Column) -> DataFrame:
    return latest.where(F.col("event_time") >= since).select(*_live_columns())


@built_once
def _live_columns() -> list[Column]:
    return [F.current_timestamp().alias(c) if c == "updated_at" else F.col(c) for c in LIVE.columns]


def with_window(duration: str) -> Step:
    """Add ``window_start``/``window_end`` of the tumbling window holding ``event_time`` (the
    window ``F.window(event_time, duration)`` gives; rows without an event time dropped, as it
    drops them)."""
    def step(df: DataFrame) -> DataFrame:
        timed, bounds = _window_columns(duration)
        return df.where(timed).withColumns(bounds)

    return step


@built_once
def _window_columns(duration: str) -> tuple[Column, dict[str, Column]]:
    # The start is the event time less its remainder modulo the width, in microseconds since the
    # epoch, as F.window computes it; two plain columns, not F.window's struct of timestamp
    # conversions: the window partials of a million states 1.5 -> 1.2 s on 2 cores. The width
    # is constant-folded when planned.
    micros = F.unix_micros("event_time")
    width = F.unix_micros(F.timestamp_micros(F.lit(0)) + F.expr(f"INTERVAL {duration}"))
    start = micros - F.pmod(micros, width)
    return (F.col("event_time").isNotNull(),
            {"window_start": F.timestamp_micros(start), "window_end": F.timestamp_micros(start + width)})


def state_partials(states: DataFrame) -> DataFrame:
    """Windowed states (see :func:`with_window`) -> one partial per state (:data:`PARTIAL_COLUMNS`,
    a projection, no aggregation): what :func:`merge_partials` sums. Merged with the open windows'
    partials in one aggregation, the batch's states are shuffled once, not aggregated twice."""
    return states.select(*_partial_columns())


@built_once
def _partial_columns() -> list[Column]:
    columns = {
        "origin_country": F.coalesce("origin_country", F.lit(UNKNOWN_COUNTRY)),
        "reports": F.lit(1).cast("long"),
        "airborne": F.coalesce(F.col("on_ground") == F.lit(False), F.lit(False)),
        "flagged": F.coalesce(F.col("is_anomaly"), F.lit(False)),
    }
    for c in _AVERAGED:
        columns[f"{c}_sum"] = F.col(c)
        columns[f"{c}_n"] = F.col(c).isNotNull().cast("long")
    return [columns[c].alias(c) if c in columns else F.col(c) for c in PARTIAL_COLUMNS]


def window_partials(states: DataFrame) -> DataFrame:
    """Windowed states (see :func:`with_window`) -> one row per window, aircraft and origin
    country: :data:`PARTIAL_COLUMNS`."""
    return merge_partials(state_partials(states))


def merge_partials(partials: DataFrame) -> DataFrame:
    """Partials of the same window, aircraft and country (from several batches) -> one row each."""
    return partials.groupBy(*PARTIAL_KEYS).agg(*_merged()).select(*_columns(tuple(PARTIAL_COLUMNS)))


@built_once
def _merged() -> list[Column]:
    sums = [F.sum(c).alias(c) for c in PARTIAL_COLUMNS if c.endswith(("_sum", "_n")) or c == "reports"]
    return [F.bool_or("airborne").alias("airborne"), F.bool_or("flagged").alias("flagged"), *sums]


def _average(c: str) -> Column:
    n = F.sum(f"{c}_n")
    return F.when(n > 0, F.sum(f"{c}_sum") / n).alias(f"avg_{c}")


def _counts() -> list[Column]:
    """Aircraft (and airborne aircraft) of a group of partials holding each aircraft once."""
    return [
        F.count("icao24").alias("aircraft"),
        F.count_if(F.col("airborne")).alias("airborne"),
        F.sum("reports").alias("position_reports"),
        _average("velocity"),
    ]


def window_stats(partials: DataFrame) -> DataFrame:
    """Window partials (see :func:`window_partials`) -> ``gold.window_stats``, one row per window.

    An aircraft reported under two origin countries in a window has two partials: they are merged
    per aircraft first, so each aircraft is counted once by plain counts (three distinct counts
    made Spark expand every partial four times)."""
    return (partials.groupBy("window_start", "window_end", "icao24").agg(*_merged())
            .groupBy("window_start", "window_end").agg(*_window_aggregates()).select(*WINDOWS.columns))


@built_once
def _window_aggregates() -> list[Column]:
    return [*_counts(), _average("vertical_rate"), _average("baro_altitude"),
            F.count_if(F.col("flagged")).alias("anomalies")]


def country_counts(partials: DataFrame) -> DataFrame:
    """Window partials -> ``gold.country_counts``, one row per window and origin country (the
    partials hold each aircraft once per window and country)."""
    return (partials.groupBy("window_start", "window_end", "origin_country").agg(*_country_aggregates())
            .select(*COUNTRIES.columns))


@built_once
def _country_aggregates() -> list[Column]:
    return [*_counts(), _average("baro_altitude")]


def closed(watermark: Column) -> Column:
    """A window is closed once its end is at or before the watermark."""
    return F.col("window_end") <= watermark


def before(moment, duration: str) -> Column:
    """The timestamp ``duration`` (a Spark SQL interval, e.g. ``2 minutes``) before ``moment``."""
    return F.lit(moment) - F.expr(f"INTERVAL {duration}")


def on_time(prev_newest, watermark: str) -> Column:
    """Whether a windowed state's window is still open: not closed by an earlier batch, whose
    newest event time was ``prev_newest`` (None: no earlier batch, every window is open)."""
    return F.lit(True) if prev_newest is None else ~closed(before(prev_newest, watermark))


def batch_summary(windowed: DataFrame, in_time: Column) -> DataFrame:
    """One row for a batch of windowed, scored states: ``n`` states, the ``newest`` event time,
    ``anomalies`` flagged, ``late`` states (not ``in_time``: for a window already closed) and the
    earliest ``window_end`` among the states in time."""
    return windowed.agg(F.count(F.lit(1)).alias("n"), F.max("event_time").alias("newest"),
                        F.count_if("is_anomaly").alias("anomalies"), F.count_if(~in_time).alias("late"),
                        F.min(F.when(in_time, F.col("window_end"))).alias("window_end"))


def window_closes(open_end, batch_end, newest, watermark) -> bool:
    """Whether a window closes with this batch: the earliest end among the windows still open
    (``open_end``, from the state) and the batch's own (``batch_end``) is at or before the newest
    event time minus the ``watermark`` (a timedelta). Known without a pass over the windows."""
    ends = [t for t in (open_end, batch_end) if t is not None]
    return bool(ends) and min(ends) <= newest - watermark
