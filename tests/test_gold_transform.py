"""Gold's pure steps on tiny DataFrames: each rule, the previous state across batches, windows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakehouse.transforms import gold as G
from lakehouse.transforms.rules import rule_names
from lakehouse.transforms.silver import parse_and_validate, to_flights
from tests.flight_records import BRONZE_DDL, T0, bronze_rows, state, track


def silver_df(spark, settings, states):
    return (spark.createDataFrame(bronze_rows([json.dumps(s) for s in states]), BRONZE_DDL)
            .transform(parse_and_validate(settings.validation)).transform(to_flights))


def no_last(spark):
    return spark.createDataFrame([], G.STATE.schema).drop("kind")


@pytest.fixture
def scored(spark, base_settings):
    def score(states, last_states=(), rules=None):
        cfg = rules or base_settings.rules
        last = (silver_df(spark, base_settings, list(last_states))
                .transform(G.score_states(no_last(spark), cfg)))
        return silver_df(spark, base_settings, states).transform(G.score_states(last, cfg))
    return score


CASES = {  # icao24 -> (state fields, rules expected to fire)
    "000001": ({}, []),
    "000002": ({"squawk": "7700"}, ["emergency_squawk"]),
    "000003": ({"squawk": "7500", "vertical_rate": -16.0}, ["emergency_squawk", "rapid_descent"]),
    "000004": ({"vertical_rate": -16.0, "on_ground": True}, []),  # not airborne
    "000005": ({"vertical_rate": -14.9}, []),
    "000006": ({"velocity": 400.5}, ["extreme_speed"]),
    "000007": ({"baro_altitude": 200.0, "velocity": 150.0}, ["low_altitude"]),  # fast and low
    "000008": ({"baro_altitude": 150.0, "velocity": 72.0, "vertical_rate": -3.5}, []),  # landing
    "000009": ({"baro_altitude": 250.0, "velocity": 90.0, "vertical_rate": 12.0}, []),  # take-off
    "00000a": ({"baro_altitude": 200.0, "velocity": 150.0, "on_ground": True}, []),  # take-off roll
    "00000b": ({"velocity": None, "vertical_rate": None, "squawk": None}, []),  # unknowns fire nothing
}


def test_each_rule_fires_on_its_case_only(spark, scored):
    df = scored([state(icao, T0, **fields) for icao, (fields, _) in CASES.items()])
    expected = spark.createDataFrame(
        [(icao, rules, bool(rules), None, False, bool(rules), None) for icao, (_, rules) in CASES.items()],
        "icao24 string, rules array<string>, rule_anomaly boolean, anomaly_score double, "
        "ml_anomaly boolean, is_anomaly boolean, model_version string")
    assertDataFrameEqual(df.select(*expected.columns), expected)


def test_a_disabled_rule_never_fires(spark, scored, base_settings):
    rules = base_settings.replace(rules={"emergency_squawk_enabled": False, "emergency_squawks": "7700"}).rules
    df = scored([state("000002", T0, squawk="7700")], rules=rules)
    assert df.first().rules == [] and "emergency_squawk" not in rule_names(rules)


def test_position_jump_uses_the_previous_state_from_an_earlier_batch(spark, scored):
    # 000001: last seen at 8.5E, now 1 degree east 10 s later (~71 km: 7 km/s vs 230 m/s reported).
    # 000002: a normal track split over the two batches. 000003: a jump within this batch.
    # 000004: a normal track with no ground speed reported (a real quirk): unknown, no jump.
    last = [state("000001", T0, 50.0, 8.5), *track("000002", T0, 2)[:1]]
    now = [state("000001", T0 + 10, 50.0, 9.5), *track("000002", T0, 3)[1:],
           state("000003", T0, 40.0, 2.0), state("000003", T0 + 20, 40.5, 2.0), state("000003", T0 + 30, 40.5, 2.02),
           *[dict(s, velocity=None) for s in track("000004", T0, 2)]]
    df = scored(now, last_states=last)
    got = {(r.icao24, r.event_time.timestamp() - T0): r.rules for r in df.collect()}
    assert got == {("000001", 10): ["position_jump"], ("000002", 10): [], ("000002", 20): [],
                   ("000003", 0): [], ("000003", 20): ["position_jump"], ("000003", 30): [],
                   ("000004", 0): [], ("000004", 10): []}


def test_an_aircraft_under_two_countries_counts_once_per_window_and_once_per_country(scored, base_settings):
    # One aircraft changes its origin country within a window (one partial per country), flagged
    # and airborne under one of them only; the window counts it once, each country once.
    states = [state("000001", T0, squawk="7700"), state("000001", T0 + 10, origin_country="Austria", on_ground=True),
              state("000002", T0 + 20, on_ground=True, origin_country="Austria")]
    windowed = scored(states).transform(G.with_window(base_settings.gold.window_duration))
    partials = G.window_partials(windowed)
    assert partials.count() == 3
    stats = G.window_stats(partials).collect()
    assert [(r.aircraft, r.airborne, r.position_reports, r.anomalies) for r in stats] == [(2, 1, 3, 1)]
    countries = {r.origin_country: (r.aircraft, r.airborne, r.position_reports)
                 for r in G.country_counts(partials).collect()}
    assert countries == {"Germany": (1, 1, 1), "Austria": (2, 0, 2)}


@pytest.mark.parametrize("duration", ["2 minutes", "90 seconds", "1 hour", "1 day"])
def test_with_window_gives_the_window_spark_gives(spark, duration):
    # Times on, next to and between window bounds, before the epoch, fractions of a second, null.
    micros = [0, 1, -1, 59_999_999, 60_000_000, 119_999_999, 120_000_000, 1_796_000_123_456_789,
              -120_000_001, -7_776_000_000_001, 86_399_999_999, 86_400_000_000, None]
    df = spark.createDataFrame([(m,) for m in micros], "m long").selectExpr("timestamp_micros(m) AS event_time")
    spark_windows = df.select("event_time", F.window("event_time", duration).alias("w")).select(
        "event_time", F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"))
    assertDataFrameEqual(df.transform(G.with_window(duration)), spark_windows)
    assert df.transform(G.with_window(duration)).count() == len(micros) - 1  # the null event time: dropped


def test_window_counts_are_distinct_aircraft(spark, scored, base_settings):
    states = [*track("000001", T0, 3, step=40),  # three reports in window [T0, T0+2min)
              state("000002", T0 + 5, on_ground=True, velocity=10.0, origin_country="France"),
              state("000003", T0 + 7, squawk="7700", origin_country=None),
              state("000001", T0 + 120)]  # next window
    windowed = scored(states).transform(G.with_window(base_settings.gold.window_duration))
    expected = spark.createDataFrame(
        [(T0, T0 + 120, 3, 2, 5, (230 * 3 + 10 + 230) / 5, 0.0, 10000.0, 1),
         (T0 + 120, T0 + 240, 1, 1, 1, 230.0, 0.0, 10000.0, 0)],
        "s long, e long, aircraft long, airborne long, position_reports long, avg_velocity double, "
        "avg_vertical_rate double, avg_baro_altitude double, anomalies long",
    ).selectExpr("timestamp_seconds(s) AS window_start", "timestamp_seconds(e) AS window_end", "*").drop("s", "e")
    partials = G.window_partials(windowed)
    assertDataFrameEqual(G.window_stats(partials), expected)
    countries = {(r.window_start.timestamp(), r.origin_country): (r.aircraft, r.airborne, r.position_reports)
                 for r in G.country_counts(partials).collect()}
    assert countries == {(T0, "Germany"): (1, 1, 3), (T0, "France"): (1, 0, 1), (T0, "unknown"): (1, 1, 1),
                         (T0 + 120, "Germany"): (1, 1, 1)}
    # The same states summed in two batches (an aircraft's window split across them), then merged.
    early = f"event_time < timestamp_seconds({T0 + 40})"
    first, second = G.window_partials(windowed.where(early)), G.window_partials(windowed.where(f"NOT ({early})"))
    merged = G.merge_partials(first.unionByName(second))
    assert merged.count() == partials.count() < first.count() + second.count()
    assertDataFrameEqual(G.window_stats(merged), expected)
    assertDataFrameEqual(G.country_counts(merged), G.country_counts(partials))
    # As the job merges: the open windows' partials and the next batch's states, one row each.
    assert G.state_partials(windowed.where(f"NOT ({early})")).count() == windowed.where(f"NOT ({early})").count()
    assertDataFrameEqual(G.merge_partials(first.unionByName(G.state_partials(windowed.where(f"NOT ({early})")))),
                         partials)


def test_latest_state_per_aircraft_within_the_live_window(spark, scored):
    from pyspark.sql import functions as F

    df = scored([*track("000001", T0, 3), state("000002", T0 - 400), state("000003", T0 + 5)])
    since = F.lit(T0 + 20).cast("timestamp") - F.expr("INTERVAL 5 minutes")
    live = G.to_live_flights(df.transform(G.latest_states(since)), since)
    assert sorted((r.icao24, int(r.event_time.timestamp()) - T0) for r in live.collect()) == [
        ("000001", 20), ("000003", 5)]
    assert live.columns == G.LIVE.columns


def test_previous_state_across_micro_batches_equals_the_training_path(spark, base_settings):
    """Train/serve parity of the kinematic inputs: on real recorded tracks cut into three
    micro-batches, gold's Spark step (each batch plus the aircraft's last state from earlier
    batches) gives every state the same ``prev_*`` values as ``ml.features.add_previous_state``
    (training and evaluation) gives it over the whole recording at once."""
    import pandas as pd
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from ingestion.replay import read_replay
    from ingestion.states import response_to_records
    from ml.features import PREV_COLUMNS, add_previous_state

    fixture = Path(__file__).parent / "fixtures" / "quickstart_excerpt.jsonl.gz"
    records = [rec for i, r in enumerate(read_replay([fixture]))
               for rec in response_to_records(r, "replay", 1_633_615_690_000 + 10_000 * i)]
    flights = silver_df(spark, base_settings, records).dropDuplicates(["icao24", "event_time"]).cache()
    times = sorted(r.event_time for r in flights.select("event_time").distinct().collect())
    cuts = [times[0], times[len(times) // 3], times[2 * len(times) // 3], times[-1]]
    kept = ["icao24", *(c.removeprefix("prev_") for c in PREV_COLUMNS)]  # what gold's state carries
    last, got = no_last(spark).select(*kept), []
    for k in range(3):
        upper = F.col("event_time") <= cuts[k + 1] if k == 2 else F.col("event_time") < cuts[k + 1]
        batch = flights.where((F.col("event_time") >= cuts[k]) & upper)
        got.append(batch.transform(G.with_previous_state(last)).toPandas())
        # what gold keeps between batches: each aircraft's newest state
        newest = Window.partitionBy("icao24").orderBy(F.col("event_time").desc())
        last = (last.unionByName(batch.select(*kept))
                .withColumn("_n", F.row_number().over(newest)).where("_n = 1").drop("_n").localCheckpoint())
    got = pd.concat(got, ignore_index=True)
    want = add_previous_state(flights.toPandas())
    assert len(got) == len(want) > 4000 and want["prev_event_time"].notna().sum() > 3500
    key, prev = ["icao24", "event_time"], list(PREV_COLUMNS)
    merged = want[key + prev].merge(got[key + prev], on=key, suffixes=("_want", "_got"),
                                            validate="one_to_one")
    assert len(merged) == len(want)
    for c in prev:
        a, b = merged[f"{c}_want"], merged[f"{c}_got"]
        assert (a.isna() == b.isna()).all(), c
        assert (a[a.notna()] == b[b.notna()]).all(), c
    flights.unpersist()


def test_a_state_table_from_before_partials_is_read_as_partials(spark, scored, base_settings, tmp_path):
    """``gold._state`` written by an older version held the open windows' states themselves."""
    from lakehouse.jobs.delta_io import write_delta
    from lakehouse.jobs.gold import is_legacy_state, open_partials

    states = scored([*track("000001", T0, 3, step=40), state("000002", T0 + 5, on_ground=True)])
    old_state = states.selectExpr("'window' AS kind", "*").unionByName(
        states.limit(1).selectExpr("'last' AS kind", "*"))
    assert "reports" not in old_state.columns
    windowed = states.transform(G.with_window(base_settings.gold.window_duration))
    assertDataFrameEqual(open_partials(old_state, base_settings.gold.window_duration), G.window_partials(windowed))
    new_state = G.window_partials(windowed).withColumn("kind", F.lit("window")).unionByName(
        states.withColumn("kind", F.lit("last")), allowMissingColumns=True)
    assertDataFrameEqual(open_partials(new_state, base_settings.gold.window_duration), G.window_partials(windowed))
    # On Delta: the legacy table is recognised and the first overwrite moves it to the new schema.
    path = str(tmp_path / "state")
    old_state.write.format("delta").save(path)
    legacy = spark.read.format("delta").load(path)
    assert is_legacy_state(legacy)
    write_delta(new_state.select(*G.STATE_ROW_COLUMNS).withColumn("generation", F.lit(1).cast("bigint")), path, "gold-test", 0,
                mode="overwrite", replay=False, options={"overwriteSchema": "true"})
    migrated = spark.read.format("delta").load(path)
    assert not is_legacy_state(migrated) and migrated.columns == G.STATE.columns
    assertDataFrameEqual(open_partials(migrated, base_settings.gold.window_duration), G.window_partials(windowed))


def test_columns_built_once_per_jvm_and_anew_for_a_new_one(monkeypatch, spark):
    """``built_once``: the silver and gold steps reuse their Columns across micro-batches (a
    Column is bound to no DataFrame), but never a Column of a JVM gone: a session started anew in
    the same process (a new gateway) builds its own."""
    from pyspark import SparkContext

    from lakehouse.transforms import built_once

    calls = []

    @built_once
    def build(name):
        calls.append(name)
        return F.col(name)

    first = build("icao24")
    assert build("icao24") is first and calls == ["icao24"]
    build("event_time")
    assert calls == ["icao24", "event_time"]
    live_gateway = SparkContext._gateway
    monkeypatch.setattr(SparkContext, "_gateway", object())  # as after a stop and a new session
    assert build("icao24") is not first and calls == ["icao24", "event_time", "icao24"]
    monkeypatch.setattr(SparkContext, "_gateway", live_gateway)
    # the steps that use it plan the same rows batch after batch
    df = spark.createDataFrame([("abc123", 1)], "icao24 string, n int")
    assert df.select(build("icao24")).collect() == df.select(build("icao24")).collect()


def test_a_batch_summary_counts_states_anomalies_and_late_ones(spark):
    windowed = spark.createDataFrame([
        ("a", datetime(2026, 1, 1, 10, 1), True, datetime(2026, 1, 1, 10, 2)),    # a window already closed
        ("b", datetime(2026, 1, 1, 10, 5), False, datetime(2026, 1, 1, 10, 6)),
        ("c", datetime(2026, 1, 1, 10, 9), True, datetime(2026, 1, 1, 10, 10)),
    ], "icao24 string, event_time timestamp, is_anomaly boolean, window_end timestamp")
    # An earlier batch saw 10:06: with a 2-minute watermark, windows ending at or before 10:04 are closed.
    in_time = G.on_time(datetime(2026, 1, 1, 10, 6), "2 minutes")
    expected = spark.createDataFrame([(3, datetime(2026, 1, 1, 10, 9), 2, 1, datetime(2026, 1, 1, 10, 6))],
                                     "n bigint, newest timestamp, anomalies bigint, late bigint, window_end timestamp")
    assertDataFrameEqual(G.batch_summary(windowed, in_time), expected)
    # The first batch of a job: nothing is late.
    first = G.batch_summary(windowed, G.on_time(None, "2 minutes")).first()
    assert (first["late"], first["window_end"]) == (0, datetime(2026, 1, 1, 10, 2))


def test_a_window_closes_when_the_earliest_open_end_falls_behind_the_watermark():
    at = datetime(2026, 1, 1, 10, 0)
    two = timedelta(minutes=2)
    assert G.window_closes(at, None, at + two, two)  # an open window's end reached exactly
    assert not G.window_closes(at, None, at + two - timedelta(seconds=1), two)
    assert G.window_closes(None, at, at + timedelta(minutes=3), two)  # the batch's own window
    assert G.window_closes(at + timedelta(minutes=5), at, at + two, two)  # the earliest of both counts
    assert not G.window_closes(None, None, at, two)  # no window at all
