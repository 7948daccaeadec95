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
from lakehouse.settings import RulesSettings
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
PARTIAL_COLUMNS = [c for c in STATE.columns if c not in SCORED_COLUMNS or c in PARTIAL_KEYS][1:]
_AVERAGED = ("velocity", "vertical_rate", "baro_altitude")
UNKNOWN_COUNTRY = "unknown"

Step = Callable[[DataFrame], DataFrame]


def with_previous_state(last: DataFrame) -> Step:
    """Add ``prev_event_time/latitude/longitude/baro_altitude/velocity/true_track/on_ground``
    (the contract ``ml.features.PREV_COLUMNS``): the same aircraft's state just before in event
    time, among this batch's states and ``last`` (each aircraft's last known state from earlier
    batches)."""

    def step(states: DataFrame) -> DataFrame:
        cols = ["icao24", "event_time", "latitude", "longitude", "baro_altitude", "velocity", "true_track",
                "on_ground"]
        known = last.select(*cols).withColumn("_new", F.lit(False))
        both = states.withColumn("_new", F.lit(True)).unionByName(known, allowMissingColumns=True)
        order = Window.partitionBy("icao24").orderBy("event_time", "_new", "partition", "offset")
        # One projection (withColumns), not one re-analysed plan per column.
        both = both.withColumns({f"prev_{c}": F.lag(c).over(order) for c in cols[1:]})
        return both.where("_new").drop("_new")

    return step


def no_model(df: DataFrame) -> DataFrame:
    """The scoring step while no model is deployed: rules only."""
    return (
        df.withColumn("anomaly_score", F.lit(None).cast("double"))
        .withColumn("ml_anomaly", F.lit(False))
        .withColumn("model_version", F.lit(None).cast("string"))
        .withColumn("ml_reason", F.lit(None).cast("string"))
    )


def flag_anomalies(df: DataFrame) -> DataFrame:
    return df.withColumn("is_anomaly", F.col("rule_anomaly") | F.coalesce("ml_anomaly", F.lit(False)))


def score_states(last: DataFrame, rules: RulesSettings, scoring: Step = no_model) -> Step:
    """Silver states -> scored states (:data:`SCORED_COLUMNS`)."""
    return lambda states: (
        states.transform(with_previous_state(last))
        .transform(apply_rules(rules))
        .transform(scoring)
        .transform(flag_anomalies)
        .select(*SCORED_COLUMNS)
    )


def to_anomalies(scored: DataFrame) -> DataFrame:
    """Flagged states only, as ``gold.anomalies``."""
    return (
        scored.where("is_anomaly")
        .withColumn("detected_at", F.current_timestamp())
        .withColumn("event_date", F.to_date("event_time"))
        .select(*ANOMALIES.columns)
    )


def latest_states(since: Column) -> Step:
    """One row per aircraft: its newest state, for aircraft seen at or after ``since``."""

    def step(states: DataFrame) -> DataFrame:
        newest_first = Window.partitionBy("icao24").orderBy(
            F.col("event_time").desc(), F.col("last_contact").desc_nulls_last(),
            F.col("latitude"), F.col("longitude"))
        return (
            states.withColumn("_n", F.row_number().over(newest_first))
            .where((F.col("_n") == 1) & (F.col("event_time") >= since))
            .select(*SCORED_COLUMNS)
        )

    return step


def to_live_flights(latest: DataFrame, since: Column) -> DataFrame:
    return latest.where(F.col("event_time") >= since).withColumn("updated_at", F.current_timestamp()).select(
        *LIVE.columns)


def with_window(duration: str) -> Step:
    """Add ``window_start``/``window_end`` of the tumbling window holding ``event_time``."""
    return lambda df: (
        df.withColumn("_w", F.window("event_time", duration))
        .withColumn("window_start", F.col("_w.start"))
        .withColumn("window_end", F.col("_w.end"))
        .drop("_w")
    )


def state_partials(states: DataFrame) -> DataFrame:
    """Windowed states (see :func:`with_window`) -> one partial per state (:data:`PARTIAL_COLUMNS`,
    a projection, no aggregation): what :func:`merge_partials` sums. Merged with the open windows'
    partials in one aggregation, the batch's states are shuffled once, not aggregated twice."""
    sums = {}
    for c in _AVERAGED:
        sums[f"{c}_sum"] = F.col(c)
        sums[f"{c}_n"] = F.col(c).isNotNull().cast("long")
    return (
        states.withColumns({
            "origin_country": F.coalesce("origin_country", F.lit(UNKNOWN_COUNTRY)),
            "reports": F.lit(1).cast("long"),
            "airborne": F.coalesce(F.col("on_ground") == F.lit(False), F.lit(False)),
            "flagged": F.coalesce(F.col("is_anomaly"), F.lit(False)),
            **sums,
        })
        .select(*PARTIAL_COLUMNS)
    )


def window_partials(states: DataFrame) -> DataFrame:
    """Windowed states (see :func:`with_window`) -> one row per window, aircraft and origin
    country: :data:`PARTIAL_COLUMNS`."""
    return merge_partials(state_partials(states))


def merge_partials(partials: DataFrame) -> DataFrame:
    """Partials of the same window, aircraft and country (from several batches) -> one row each."""
    sums = [F.sum(c).alias(c) for c in PARTIAL_COLUMNS if c.endswith(("_sum", "_n")) or c == "reports"]
    return (
        partials.groupBy(*PARTIAL_KEYS)
        .agg(F.bool_or("airborne").alias("airborne"), F.bool_or("flagged").alias("flagged"), *sums)
        .select(*PARTIAL_COLUMNS)
    )


def _average(c: str) -> Column:
    n = F.sum(f"{c}_n")
    return F.when(n > 0, F.sum(f"{c}_sum") / n).alias(f"avg_{c}")


def _counts() -> list[Column]:
    return [
        F.count_distinct("icao24").alias("aircraft"),
        F.count_distinct(F.when(F.col("airborne"), F.col("icao24"))).alias("airborne"),
        F.sum("reports").alias("position_reports"),
        _average("velocity"),
    ]


def window_stats(partials: DataFrame) -> DataFrame:
    """Window partials (see :func:`window_partials`) -> ``gold.window_stats``, one row per window."""
    return (
        partials.groupBy("window_start", "window_end")
        .agg(*_counts(), _average("vertical_rate"), _average("baro_altitude"),
             F.count_distinct(F.when(F.col("flagged"), F.col("icao24"))).alias("anomalies"))
        .select(*WINDOWS.columns)
    )


def country_counts(partials: DataFrame) -> DataFrame:
    """Window partials -> ``gold.country_counts``, one row per window and origin country."""
    return (
        partials.groupBy("window_start", "window_end", "origin_country")
        .agg(*_counts(), _average("baro_altitude"))
        .select(*COUNTRIES.columns)
    )


def closed(watermark: Column) -> Column:
    """A window is closed once its end is at or before the watermark."""
    return F.col("window_end") <= watermark
