"""Silver on a real broker and real Delta: validation, quarantine reasons, deduplication and the
accounting invariant bronze = flights + quarantine + duplicates dropped; and the pure validation
step on small DataFrames (no broker)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakehouse.catalog import table_path
from lakehouse.jobs import bronze, silver
from lakehouse.jobs.streams import await_queries
from lakehouse.status import accounting
from lakehouse.transforms.silver import (
    REASONS,
    batch_span,
    drop_duplicates,
    keys_to_look_up,
    parse_and_validate,
    to_flights,
    to_outputs,
    to_quarantine,
)
from tests.flight_records import BRONZE_DDL, T0, as_records, bronze_rows, record, state, track
from tests.helpers import delta_version, produce, run_cli

DAY = 86_400
# A year from now: later than any Kafka append time of this run.
NEXT_YEAR = int(time.time()) + 365 * DAY


def run_once(spark, settings, *layers):
    for layer in layers:
        await_queries(layer.start(spark, settings, once=True))


def read(spark, settings, name):
    return spark.read.format("delta").load(table_path(settings, name))


# Rejected records and the reason each must get.
BAD = {
    "{not json": "malformed_json",
    "": "malformed_json",
    "[1, 2]": "not_an_object",
    '"3c6444"': "not_an_object",
    json.dumps(state(schema_version=2)): "unsupported_schema",
    json.dumps({k: v for k, v in state().items() if k != "schema_version"}): "unsupported_schema",
    json.dumps(state(icao24="XYZ123")): "invalid_icao24",
    json.dumps(state(icao24=None)): "invalid_icao24",
    json.dumps(state(time_position=None)): "no_position",
    json.dumps(state(latitude=None)): "no_position",
    json.dumps(state(latitude=91.0)): "invalid_position",
    json.dumps(state(longitude=-180.5)): "invalid_position",
    json.dumps(state(baro_altitude=25001.0)): "implausible_altitude",
    json.dumps(state(velocity=1000.5)): "implausible_velocity",
    json.dumps(state(velocity="fast")): "implausible_velocity",
    json.dumps(state(vertical_rate=-250.0)): "implausible_vertical_rate",
    json.dumps(state(on_ground="yes")): "invalid_field",
    # A day after its snapshot: kept, it would move the dedup watermark a day ahead and the
    # duplicate of good[3] below would go through unchecked.
    json.dumps(state(time_position=T0 + DAY)): "implausible_time",
    # Dated next year with no snapshot_time, or with one as far ahead: the records' own clocks
    # say nothing is wrong; the Kafka append time (the broker's clock) does.
    json.dumps({k: v for k, v in state(t=NEXT_YEAR).items() if k != "snapshot_time"}): "implausible_time",
    json.dumps(state(t=NEXT_YEAR, snapshot_time=NEXT_YEAR)): "implausible_time",
}


@pytest.mark.integration
def test_records_split_into_flights_and_quarantine_with_reasons(spark, lake):
    good = track("3c6444", T0, 6) + track("4ca1b2", T0, 6, lat=48.0) + [
        state("a0b1c2", T0, callsign="   "),
        state("A0B1C3", T0, velocity=450.0, vertical_rate=-30.0),  # unusual but possible: kept
    ]
    dupes = [good[0], dict(good[1], callsign="OTHER")]  # same (icao24, event_time) twice
    produce(lake, as_records(good + dupes) + [("k", v) for v in BAD])
    run_once(spark, lake, bronze, silver)

    flights = read(spark, lake, "silver.flights")
    assert flights.count() == len(good)
    assert flights.select("icao24", "event_time").distinct().count() == len(good)
    assert {r.icao24 for r in flights.collect()} == {"3c6444", "4ca1b2", "a0b1c2", "a0b1c3"}
    row = flights.where("icao24 = 'a0b1c2'").first()
    assert row.callsign is None and row.event_date.isoformat() == "2023-11-14"
    assert str(row.event_time) == "2023-11-14 22:14:00"
    assert flights.where("icao24 = '3c6444'").first().callsign == "DLH9U"  # trimmed
    # The first by Kafka offset is kept, not a later copy.
    assert flights.where("callsign = 'OTHER'").count() == 0

    quarantine = {r.value_text: r for r in read(spark, lake, "silver.quarantine").collect()}
    assert all(bytes(r.value).decode() == text for text, r in quarantine.items())
    assert {v: r.reason for v, r in quarantine.items()} == BAD
    assert all(r.detail and r.topic == lake.kafka.topic and r.offset is not None for r in quarantine.values())
    assert "91.0 outside [-90, 90]" in quarantine[json.dumps(state(latitude=91.0))].detail
    assert "after its Kafka append time" in quarantine[json.dumps(state(t=NEXT_YEAR, snapshot_time=NEXT_YEAR))].detail
    # Nothing from next year moved silver's newest event time (the dedup watermark).
    newest = read(spark, lake, "silver._dedup_stats").agg({"max_event_time": "max"}).first()[0]
    assert newest.year == 2023
    # The topic stamps records with the broker's clock, not the producer's.
    assert {r.timestampType for r in spark.read.format("kafka").option(
        "kafka.bootstrap.servers", lake.kafka.bootstrap_servers).option("subscribe", lake.kafka.topic)
        .load().select("timestampType").distinct().collect()} == {1}  # 1: LogAppendTime

    counts = accounting(lake)
    assert counts == {
        "bronze_rows": len(good) + len(dupes) + len(BAD), "processed_rows": len(good) + len(dupes) + len(BAD),
        "flights_rows": len(good), "quarantine_rows": len(BAD), "duplicates": 2, "unchecked_late_rows": 0,
        "pending_rows": 0, "holds": True,
    }

    # A duplicate of an earlier batch's state is dropped too; a run with nothing new adds nothing.
    produce(lake, as_records([good[3], state("3c6444", T0 + 60)]))
    run_once(spark, lake, bronze, silver)
    assert read(spark, lake, "silver.flights").count() == len(good) + 1
    versions = {n: delta_version(lake, n) for n in ("silver.flights", "silver.quarantine", "silver._dedup_stats")}
    run_once(spark, lake, bronze, silver)
    assert {n: delta_version(lake, n) for n in versions} == versions
    counts = accounting(lake)
    assert counts["duplicates"] == 3 and counts["holds"] and counts["pending_rows"] == 0

    out = run_cli(lake, "status").stdout
    assert "silver.flights" in out and "accounting" in out and "duplicates dropped 3" in out and "holds" in out


# Bytes that are not UTF-8, as anyone who can write to the topic could send them.
GOOD_JSON = json.dumps(state("4ca1b2", T0 + 30))
HOSTILE = {
    "in the value": b'{"icao24": "\xff\xfe"}',
    "inside a JSON string": GOOD_JSON.replace('"DLH9U   "', '"DLH_"').encode().replace(b"DLH_", b"DLH\xc3\x28"),
    "overlong encoding of /": b'{"icao24": "3c6444", "callsign": "\xc0\xaf"}',
    "UTF-16 surrogate": b'{"icao24": "3c6444", "callsign": "\xed\xa0\x80"}',
}


@pytest.mark.integration
def test_bytes_that_are_not_utf8_are_quarantined_and_every_table_stays_readable(spark, lake):
    import pyarrow as pa
    from deltalake import DeltaTable

    from lakehouse.catalog import TABLES
    from lakehouse.jobs import pipeline

    good = track("3c6444", T0, 3)
    assert b"\xc3\x28" in HOSTILE["inside a JSON string"]
    records = [*as_records(good), (b"\xff\xfe\xfd", GOOD_JSON)]  # a key that is not UTF-8: kept
    records += [("bad", value) for value in HOSTILE.values()]
    produce(lake, records)
    await_queries(pipeline.start(spark, lake, once=True))

    for name in TABLES:  # every table, read as the dashboard and notebooks read them
        dt = DeltaTable(table_path(lake, name))
        frame = dt.to_pandas()
        arrow = pa.table(dt.to_pyarrow_table())
        for column in arrow.column_names:
            if pa.types.is_string(arrow.schema.field(column).type) or pa.types.is_large_string(
                    arrow.schema.field(column).type):
                arrow.column(column).validate(full=True)
        assert len(frame) == arrow.num_rows
    bronze_rows = DeltaTable(table_path(lake, "bronze.opensky_states")).to_pandas()
    assert set(bronze_rows.value) == {v.encode() if isinstance(v, str) else v for _, v in records}  # byte for byte
    assert b"\xff\xfe\xfd" in set(bronze_rows.key)

    quarantine = DeltaTable(table_path(lake, "silver.quarantine")).to_pandas()
    assert sorted(quarantine.value) == sorted(HOSTILE.values())
    assert set(quarantine.reason) == {"invalid_encoding"}
    assert all("\ufffd" in text for text in quarantine.value_text)  # readable, invalid bytes replaced
    assert all(d.startswith("value is not valid UTF-8") for d in quarantine.detail)
    flights = DeltaTable(table_path(lake, "silver.flights")).to_pandas()
    assert sorted(flights.icao24) == ["3c6444"] * 3 + ["4ca1b2"]  # the odd key does not matter
    assert accounting(lake)["holds"]


@pytest.mark.integration
@pytest.mark.parametrize("compiled", [False, True], ids=["interpreted", "compiled"])
def test_duplicate_later_than_the_watermark_is_kept_and_counted(spark, lake, monkeypatch, compiled):
    """Policy: dedup state covers silver.dedup_watermark (here 10 minutes) behind the newest
    event time; a duplicate older than that is not looked up, kept, and counted as unchecked.
    Both ways a batch is deduplicated: interpreted (small batches) and compiled (large ones)."""
    monkeypatch.setattr(silver, "COMPILED_DEDUP_ROWS", 0 if compiled else 10**9)
    first = track("3c6444", T0, 3) + [state("4ca1b2", T0 + 1200)]
    produce(lake, as_records(first))
    run_once(spark, lake, bronze, silver)
    produce(lake, [record(icao24="3c6444", t=T0), record(icao24="4ca1b2", t=T0 + 1200)])
    run_once(spark, lake, bronze, silver)

    flights = read(spark, lake, "silver.flights")
    assert flights.where(f"icao24 = '3c6444' AND time_position = {T0}").count() == 2  # too late: kept
    assert flights.where(f"icao24 = '4ca1b2' AND time_position = {T0 + 1200}").count() == 1  # dropped
    counts = accounting(lake)
    assert (counts["duplicates"], counts["unchecked_late_rows"], counts["holds"]) == (1, 1, True)


@pytest.mark.integration
def test_a_batch_looks_its_keys_up_in_the_batch_before_only_when_no_older_batch_can_hold_them(spark, lake,
                                                                                            monkeypatch):
    """The duplicate look-up reads the flights the previous batch of the process wrote, from
    memory, when every batch before that one is older than the batch's oldest event time; else
    silver.flights. Duplicates of the batch before and of older batches are dropped either way."""
    looked_up = []
    real = silver.known_flights

    def spy(*args):
        kept = [entry[2] for entry in silver._WRITTEN.values()]
        known = real(*args)
        looked_up.append("memory" if any(known is df for df in kept) else "table")
        return known

    monkeypatch.setattr(silver, "known_flights", spy)
    batches = [
        track("3c6444", T0, 3),  # T0, +10, +20: the first batch, nothing to look up
        [state("3c6444", T0 + 20), state("3c6444", T0 + 30)],  # +20 again; the batch before has no "before"
        [state("3c6444", T0 + 30), state("3c6444", T0 + 40)],  # +30 again, only in the batch before
        [state("3c6444", T0 + 20), state("3c6444", T0 + 50)],  # +20 again: an older batch has it
    ]
    for states in batches:
        produce(lake, as_records(states))
        run_once(spark, lake, bronze, silver)

    assert looked_up == ["table", "table", "memory", "table"]
    times = [r.time_position for r in read(spark, lake, "silver.flights").where("icao24 = '3c6444'")
             .orderBy("time_position").collect()]
    assert times == [T0 + 10 * i for i in range(6)]  # each once
    counts = accounting(lake)
    assert (counts["duplicates"], counts["holds"]) == (3, True)


def bronze_df(spark, values, appended=None):
    return spark.createDataFrame(bronze_rows(values, appended), BRONZE_DDL)


def test_a_position_ahead_of_its_kafka_append_time_is_quarantined_as_implausible_time(spark, base_settings):
    ahead = base_settings.validation.time_position_max_ahead_s
    appended = datetime.fromtimestamp(T0, timezone.utc)
    no_snapshot = lambda **kw: {k: v for k, v in state(**kw).items() if k != "snapshot_time"}  # noqa: E731
    cases = [  # (record, reason or None = kept in silver); every record appended to Kafka at T0
        (state(t=T0 - 10), None),
        (no_snapshot(t=T0 + ahead), None),  # at the bound: kept
        (no_snapshot(t=T0 + ahead + 1), "implausible_time"),
        (no_snapshot(t=T0 + 365 * DAY), "implausible_time"),
        (state(t=T0 + DAY, snapshot_time=T0 + DAY), "implausible_time"),  # its own clock agrees
        (no_snapshot(t=T0 - DAY), None),  # old: only late
    ]
    parsed = bronze_df(spark, [json.dumps(c) for c, _ in cases], appended).transform(
        parse_and_validate(base_settings.validation)).persist()
    try:
        expected = spark.createDataFrame([(i, reason) for i, (_, reason) in enumerate(cases)],
                                         "offset bigint, reason string")
        assertDataFrameEqual(parsed.select("offset", "reason"), expected)
        assert parsed.where("offset = 4").first().detail == (
            f"time_position {T0 + DAY} is {DAY} s after its Kafka append time 2023-11-14 22:14:00 UTC "
            f"(at most {ahead})")
    finally:
        parsed.unpersist()


def test_the_cached_columns_give_both_tables_the_same_rows(spark, base_settings):
    """to_outputs, what the silver job caches between its passes: the value's bytes of rejected
    rows only; flights and quarantine come out as from the parsed rows themselves."""
    values = [json.dumps(state()), json.dumps(state(latitude=91.0)), "{not json", b"\xff\xfe{}"]
    parsed = bronze_df(spark, values).transform(parse_and_validate(base_settings.validation)).persist()
    try:
        slim = parsed.transform(to_outputs)
        assert [r.value is None for r in slim.orderBy("offset").collect()] == [True, False, False, False]
        # processed_at / quarantined_at are the time of each query: left out
        assertDataFrameEqual(to_flights(slim).drop("processed_at"), to_flights(parsed).drop("processed_at"))
        assertDataFrameEqual(to_quarantine(slim).drop("quarantined_at"), to_quarantine(parsed).drop("quarantined_at"))
        assert to_quarantine(slim).count() == 3
    finally:
        parsed.unpersist()


def test_drop_duplicates_keeps_the_first_new_row_of_each_key(spark, base_settings):
    """One row per (icao24, event_time): of the batch's own the first by (partition, offset), none
    whose key silver already holds since the horizon, and one older than the horizon kept (not
    looked up) even when its key is known."""
    at = lambda t: datetime.fromtimestamp(t, timezone.utc)  # noqa: E731
    cases = [  # (state, kept)
        (state("3c6444", T0 + 10, lat=50.0), False),  # offset 0, partition 1: after the next one
        (state("3c6444", T0 + 10, lat=50.1), True),  # offset 1, partition 0: first of its key
        (state("3c6444", T0 + 20), True),
        (state("4ca1b2", T0 + 10), False),  # known
        (state("4ca1b2", T0 + 10, lat=51.0), False),  # known, and a duplicate in the batch too
        (state("4ca1b2", T0 - 900), True),  # known, but older than the horizon: not looked up
        (state("4ca1b2", T0 - 900), False),  # ... still one per key within the batch
        (state("abcdef", T0 + 10), True),
    ]
    flights = (bronze_df(spark, [json.dumps(c) for c, _ in cases])
               .withColumn("partition", F.when(F.col("offset") == 0, 1).otherwise(0))
               .transform(parse_and_validate(base_settings.validation)).transform(to_flights))
    known = spark.createDataFrame([("4ca1b2", at(T0 + 10)), ("4ca1b2", at(T0 - 900)), ("3c6444", at(T0 + 30))],
                                  "icao24 string, event_time timestamp")
    kept = flights.transform(drop_duplicates(known, at(T0 - 600)))
    assert kept.columns == flights.columns
    assert sorted(r.offset for r in kept.collect()) == [i for i, (_, k) in enumerate(cases) if k]
    # before any batch (no horizon): the batch's own duplicates only
    first = flights.transform(drop_duplicates(known, None))
    assert sorted(r.offset for r in first.collect()) == [1, 2, 3, 5, 7]


def test_the_keys_looked_up_are_those_of_the_batch_span_since_the_horizon(spark):
    at = lambda t: datetime.fromtimestamp(t, timezone.utc)  # noqa: E731
    batch = spark.createDataFrame([("a", at(T0 - 900)), ("b", at(T0 - 60)), ("c", at(T0))],
                                  "icao24 string, event_time timestamp")
    naive = lambda t: at(t).replace(tzinfo=None)  # noqa: E731  (Spark hands back naive UTC, as the job's horizon is)
    horizon = naive(T0 - 600)
    span = batch_span(batch, horizon).first()
    assert (span["lo"], span["hi"], span["late"]) == (naive(T0 - 900), naive(T0), 1)
    assert batch_span(batch, None).first()["late"] == 0  # no horizon yet: none is too old
    known = spark.createDataFrame([(k, at(t), at(t).date()) for k, t in
                                   (("old", T0 - 700), ("in", T0 - 60), ("last", T0), ("after", T0 + 1))],
                                  "icao24 string, event_time timestamp, event_date date")
    looked_up = keys_to_look_up(known, horizon, span["lo"], span["hi"])
    # From the horizon (later than the batch's oldest row) to the batch's newest event time.
    assert sorted(r.icao24 for r in looked_up.collect()) == ["in", "last"]
    assert keys_to_look_up(known, horizon, None, None).count() == 0  # no valid row: nothing to look up
    assert keys_to_look_up(known, None, None, None).count() == 4  # the first batch: every known key


def test_reason_codes_keep_their_precedence():
    # The first reason that applies is recorded: a new code goes last so no rejected record
    # changes reason. The one exception, invalid_encoding, comes first: bytes that are not UTF-8
    # are not text, so nothing else can be checked; it changed the reason of no record that is.
    assert REASONS == (
        "invalid_encoding", "malformed_json", "not_an_object", "unsupported_schema", "invalid_icao24", "no_position",
        "invalid_position", "implausible_altitude", "implausible_velocity", "implausible_vertical_rate",
        "invalid_field", "implausible_time")


def test_a_position_timed_after_its_snapshot_is_quarantined_as_implausible_time(spark, base_settings):
    ahead = base_settings.validation.time_position_max_ahead_s
    assert ahead == 60
    cases = [  # (record, reason or None = kept in silver)
        (state(t=T0), None),  # time_position 5 s before snapshot_time, as real data
        (state(t=T0, snapshot_time=T0 + ahead), None),  # at the bound: kept
        (state(t=T0, snapshot_time=T0 - ahead - 1), "implausible_time"),
        (state(t=T0 + DAY, snapshot_time=T0), "implausible_time"),
        (state(t=T0 * 1000, snapshot_time=T0), "implausible_time"),  # milliseconds for seconds
        (state(t=T0 - DAY, snapshot_time=T0), None),  # old: only late, the watermarks handle it
        (state(t=T0 + DAY, snapshot_time=T0, latitude=91.0), "invalid_position"),  # earlier reason wins
        (state(t=T0 + DAY, snapshot_time=T0, on_ground="yes"), "invalid_field"),
    ]
    parsed = bronze_df(spark, [json.dumps(c) for c, _ in cases]).transform(
        parse_and_validate(base_settings.validation)).persist()
    try:
        expected = spark.createDataFrame([(i, reason) for i, (_, reason) in enumerate(cases)],
                                         "offset bigint, reason string")
        assertDataFrameEqual(parsed.select("offset", "reason"), expected)
        detail = parsed.where("offset = 3").first().detail
        assert detail == f"time_position {T0 + DAY} is {DAY} s after snapshot_time {T0} (at most {ahead})"
        # Accounting: every row lands in exactly one of the two tables.
        kept = {r.offset for r in to_flights(parsed).collect()}
        rejected = {r.offset for r in to_quarantine(parsed).collect()}
        assert kept == {i for i, (_, reason) in enumerate(cases) if reason is None}
        assert kept | rejected == set(range(len(cases))) and not kept & rejected
    finally:
        parsed.unpersist()


def test_the_stats_row_built_from_literals_matches_create_dataframe(spark):
    # the dedup stats row is planned from literals (no Python worker): same types and values as
    # createDataFrame gives the same tuple, a naive timestamp and a null included
    ddl = silver.table(silver.STATS).ddl(without=("committed_at",))
    for newest in (datetime(2026, 12, 6, 2, 40, 1, 123456), None):
        values = ("silver-q", 7, 10, 6, 3, 1, 0, newest)
        built = silver.literal_row(spark, ddl, values)
        assert built.rdd.getNumPartitions() == 1
        assertDataFrameEqual(built, spark.createDataFrame([values], ddl), checkRowOrder=True)
        assert built.first()[-1] == newest


def test_validation_compiled_gives_the_interpreted_rows_and_puts_the_setting_back(spark, base_settings, tmp_path):
    """compiled_expressions: the same flights and quarantine rows (every reason) as interpreted
    evaluation, classes really compiled inside (and found in Spark's code cache on the next
    batch), the session's NO_CODEGEN back after; JobSteps logs the classes compiled per step."""
    from lakehouse.jobs.progress import JobSteps, compiled_classes
    from lakehouse.spark import compiled_expressions

    values = [json.dumps(state(icao24=f"{i:06x}")) for i in range(20)] + list(BAD) + [b"\xff\xfe{}"]
    appended = datetime.now(timezone.utc)  # one Kafka append time for the three passes

    def parsed_rows():
        parsed = bronze_df(spark, values, appended).transform(parse_and_validate(base_settings.validation)).transform(to_outputs)
        return (sorted(to_flights(parsed).drop("processed_at").collect()),
                sorted(to_quarantine(parsed).drop("quarantined_at").collect()))

    assert spark.conf.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN"
    interpreted = parsed_rows()
    timings = tmp_path / "timings.jsonl"
    steps = JobSteps(spark, "silver", 0, str(timings))
    steps("parse and validate")
    with compiled_expressions(spark):
        assert spark.conf.get("spark.sql.codegen.factoryMode") == "FALLBACK"
        compiled = parsed_rows()
    steps("again")
    with compiled_expressions(spark):
        again = parsed_rows()
    steps.done()
    assert spark.conf.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN"
    assert spark.conf.get("spark.sql.subexpressionElimination.enabled") == "false"
    assert compiled == interpreted == again
    assert len(interpreted[0]) == 20 and len(interpreted[1]) == len(BAD) + 1
    split = json.loads(timings.read_text())
    assert split["compiled"].get("parse and validate", 0) > 0  # generated code ran
    assert split["compiled"].get("again", 0) < split["compiled"]["parse and validate"]  # from the cache
    assert compiled_classes(spark) is not None


# The plain parser's cases: (JSON text, whether it is plain). What is plain the Java parser
# parses itself; the rest it leaves to from_json. Either way `r` must be what from_json alone gives.
_S = json.dumps(state())
PARSER_CASES = [
    (_S, True),
    (json.dumps(state(), indent=2), True),  # whitespace and newlines between the tokens
    (json.dumps(state(sensors=[1, None, 70000]), separators=(",", ":")), True),
    (json.dumps(state(sensors=[])), True),
    (json.dumps(state(callsign="ÆØÅ 中文 ✈", origin_country="Côte d'Ivoire"), ensure_ascii=False), True),
    (json.dumps(state(longitude=8, latitude=-0, velocity=1.5e2, vertical_rate=-1.25E-3, true_track=123456789012345678)),
     True),  # integers for doubles (as Jackson converts them), exponents
    (json.dumps(state(baro_altitude=1e308, geo_altitude=-2.2250738585072014e-308, velocity=0.1 + 0.2)), True),
    (json.dumps(state(time_position=-9, produced_at=999_999_999_999_999_999)), True),
    (json.dumps({k: None for k in state()}), True),  # every field null
    ("{}", True),
    ('{"icao24": "3c6444"}', True),  # fields missing
    (json.dumps(state(callsign="DLH\\"), ensure_ascii=True), False),  # an escape
    (json.dumps(state(callsign="\u2708"), ensure_ascii=True), False),  # \\u escape
    (_S[:-1] + ', "extra": 1}', False),  # a key not in the record
    (_S[:-1] + ', "icao24": "abcdef"}', False),  # a key twice
    (json.dumps(state(time_position="1700000000")), False),  # a string for a number
    (json.dumps(state(time_position=1.0)), False),  # a fraction for a long
    (json.dumps(state(category=2**31)), False),  # beyond an int
    (json.dumps(state(produced_at=10**19)), False),  # beyond 18 digits
    (json.dumps(state(velocity=10**19)), False),
    (json.dumps(state(velocity=1e400)), False),  # Python writes Infinity: not JSON
    (json.dumps(state(velocity=float("nan"))), False),
    (_S.replace('"velocity": 230.0', '"velocity": 01'), False),  # a leading zero
    (_S.replace('"velocity": 230.0', '"velocity": +1'), False),
    (_S.replace('"velocity": 230.0', '"velocity": 1.'), False),
    (_S.replace('"velocity": 230.0', '"velocity": 2e'), False),
    (_S.replace('"velocity": 230.0', '"velocity": 230.0x'), False),
    (json.dumps(state(on_ground="yes")), False),
    (json.dumps(state(on_ground=1)), False),
    (json.dumps(state(callsign=7)), False),  # a number for a string
    (json.dumps(state(callsign={"a": 1})), False),
    (json.dumps(state(sensors=[1, "2"])), False),
    (json.dumps(state(sensors=[1.5])), False),
    (json.dumps(state(sensors=7)), False),
    (_S.replace('"DLH9U   "', '"DLH\t9U"'), False),  # a control character in a string
    (_S + " {}", False),  # more after the object
    (_S[:-1], False),  # no closing brace
    ("[" + _S + "]", False),
    ("", False),
    ("null", False),
    ('"3c6444"', False),
    ("\ufeff" + _S, False),  # a byte order mark
]


@pytest.mark.integration
def test_the_plain_record_parser_gives_what_from_json_gives(spark):
    """The Java parser of plain records (lakehouse/java, on the test session's class path) takes
    the plain ones and leaves the others to from_json; `r` equals from_json's in every case."""
    from lakehouse.transforms.silver import PARSED_SCHEMA, parse_records, plain_record_parser

    plain = plain_record_parser()
    assert plain is not None, "the project's jar is not on the session's class path"
    values = [text for text, _ in PARSER_CASES] + [None]
    rows = bronze_df(spark, values).transform(parse_records).select(
        "offset", "r", plain(F.col("value")).isNotNull().alias("plain"),
        F.from_json(F.col("value").cast("string"), PARSED_SCHEMA,
                    {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt_record"}).alias("expected"),
    ).orderBy("offset").collect()
    for (text, is_plain), row in zip([*PARSER_CASES, (None, False)], rows, strict=True):
        assert row.plain == is_plain, text
        assert repr(row.r) == repr(row.expected), text  # repr: NaN equals NaN
        if is_plain:
            assert row.r is not None and row.r["_corrupt_record"] is None, text
    assert rows[0].r["velocity"] == 230.0 and rows[2].r["sensors"] == [1, None, 70000]
