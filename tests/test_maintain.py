"""``run all --once`` on real recorded tracks, then ``maintain``: compaction and VACUUM keep every
row, honour the configured retention, leave every table readable by delta-rs (the dashboard's
reader), and the streams carry on exactly once afterwards."""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from ingestion.replay import read_replay
from lakehouse.app.commands import maintain
from lakehouse.catalog import TABLES, table_path
from lakehouse.jobs.layers import LAYERS, run_layers
from lakehouse.table_setup import EVERY_BATCH_TABLES
from tests.helpers import delta_rows, produce, replay_records

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "quickstart_excerpt.jsonl.gz"


def _args(**kw):
    defaults = {"table": None, "retention_hours": None, "no_optimize": False, "no_vacuum": False}
    return argparse.Namespace(**{**defaults, **kw})


def test_maintain_compacts_vacuums_and_every_table_stays_readable(spark, lake):
    responses = list(read_replay([FIXTURE]))
    chunks = [responses[:50], responses[50:100], responses[100:150], responses[150:]]
    sent = 0
    for chunk in chunks[:3]:  # three `run all --once` rounds: several small files per table
        sent += produce(lake, replay_records(chunk))
        assert run_layers(lake, list(LAYERS), once=True) == 0
    assert delta_rows(lake, "bronze.opensky_states") == sent

    present = [n for n in TABLES if maintain.layout(lake, n) is not None]
    public = {n for n in TABLES if not TABLES[n].internal}
    assert public <= set(present), f"run all --once did not create {public - set(present)}"
    rows = {n: delta_rows(lake, n) for n in present}
    assert rows["silver.flights"] > 0 and rows["gold.window_stats"] > 0
    before = {n: maintain.layout(lake, n) for n in present}
    # Delta keeps min/max statistics of each table's keys only, and the tables every micro-batch
    # commits to checkpoint every 100 commits, the others every 10 (lakehouse.table_setup.table_properties).
    for name in present:
        config = DeltaTable(table_path(lake, name)).metadata().configuration
        assert config["delta.dataSkippingStatsColumns"] == ",".join(TABLES[name].keys), name
        assert config["delta.checkpointInterval"] == ("100" if name in EVERY_BATCH_TABLES else "10"), name
        # gold.live_flights (a whole snapshot per version) keeps a shorter history than the others
        hours = lake.maintain.live_retention_hours if name == "gold.live_flights" else lake.maintain.retention_hours
        assert config["delta.logRetentionDuration"] == f"interval {hours} hours", name
    adds = pa.table(DeltaTable(table_path(lake, "silver.flights")).get_add_actions(flatten=True)).to_pydict()
    assert adds["min.event_time"][0] is not None and adds["max.icao24"][0] is not None
    assert not {c for c in adds if c.startswith("min.")} - {"min.icao24", "min.event_time"}
    # A table made by an older version (Delta's default statistics) is brought in line.
    spark.sql(f"ALTER TABLE delta.`{table_path(lake, 'gold.window_stats')}` "
              "UNSET TBLPROPERTIES ('delta.dataSkippingStatsColumns')")
    spark.sql(f"ALTER TABLE delta.`{table_path(lake, 'gold._state')}` "
              "SET TBLPROPERTIES ('delta.checkpointInterval' = '10')")

    assert maintain.run(_args(retention_hours=0), lake) == 0
    config = DeltaTable(table_path(lake, "gold.window_stats")).metadata().configuration
    assert config["delta.dataSkippingStatsColumns"] == "window_start"
    assert DeltaTable(table_path(lake, "gold._state")).metadata().configuration["delta.checkpointInterval"] == "100"

    for name in present:
        after = maintain.layout(lake, name)
        assert after["files"] <= before[name]["files"], name
        assert delta_rows(lake, name) == rows[name], f"{name} lost or gained rows"
        assert maintain.read_back(lake, name) == rows[name]
        ops = {h["operation"] for h in DeltaTable(table_path(lake, name)).history()}
        assert {"VACUUM START", "VACUUM END"} <= ops, (name, ops)
    for name in ("bronze.opensky_states", "silver.flights"):  # three appends each: compacted
        assert maintain.layout(lake, name)["files"] < before[name]["files"], name
        assert "OPTIMIZE" in {h["operation"] for h in DeltaTable(table_path(lake, name)).history()}
    # Retention 0 keeps no time travel: the first live snapshot's files are gone.
    with pytest.raises(Exception):  # noqa: B017 - delta-rs raises an OSError subclass or its own
        DeltaTable(table_path(lake, "gold.live_flights"), version=1).to_pyarrow_table()

    # The default retention (7 days) removes nothing more; a second run is harmless.
    files = {n: maintain.layout(lake, n)["files"] for n in present}
    results = maintain.maintain(lake, present, lake.maintain.retention_hours)
    assert all(r.get("vacuumed") == 0 and "error" not in r for r in results), results
    assert {n: maintain.layout(lake, n)["files"] for n in present} == files

    # The streams resume after compaction: the last chunk arrives exactly once.
    sent += produce(lake, replay_records(chunks[3]))
    assert run_layers(lake, list(LAYERS), once=True) == 0
    assert delta_rows(lake, "bronze.opensky_states") == sent
    assert delta_rows(lake, "silver.flights") > rows["silver.flights"]


def test_maintain_names_an_unknown_table(lake, capsys):
    assert maintain.run(_args(table=["silver.flight"]), lake) == 2
    assert "unknown table silver.flight" in capsys.readouterr().err


def test_a_fractional_retention_is_rounded_up_to_whole_hours(lake, monkeypatch, caplog):
    # Delta's VACUUM rounds to whole hours: 0.4 h would silently keep no time travel at all.
    asked = {}
    monkeypatch.setattr(maintain, "maintain", lambda settings, names, hours, **kw: asked.update(hours=hours) or [])
    assert maintain.run(_args(retention_hours=0.4), lake) == 0
    assert asked["hours"] == 1
    assert "rounded up to 1 h" in caplog.text


def test_tables_from_before_binary_bytes_stop_the_jobs_until_maintain_rewrites_them(spark, lake):
    """bronze and the quarantine kept Kafka values as text before; such a table stops a job at
    its start with what to do, and `maintain` rewrites it with binary columns, rows kept."""
    from datetime import datetime, timezone

    from lakehouse.jobs.layers import run_layers
    from lakehouse.table_setup import ensure_table

    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    old = {
        "bronze.opensky_states": (spark.createDataFrame(
            [("3c6444", '{"icao24": "3c6444"}', "t", 0, 0, at, at, at.date())],
            "key string, value string, topic string, partition int, offset bigint, kafka_timestamp timestamp, "
            "ingested_at timestamp, ingest_date date"), ["ingest_date"]),
        "silver.quarantine": (spark.createDataFrame(
            [("{not json", "t", 0, 0, "malformed_json", "not JSON: {not json", at)],
            "value string, topic string, partition int, offset bigint, reason string, detail string, "
            "quarantined_at timestamp"), []),
    }
    for name, (df, partitions) in old.items():
        df.write.format("delta").partitionBy(*partitions).save(table_path(lake, name))
    with pytest.raises(RuntimeError, match=r"run `opensky-lakehouse maintain --table bronze.opensky_states` once"):
        ensure_table(spark, lake, "bronze.opensky_states")

    assert maintain.run(_args(table=list(old), no_vacuum=True), lake) == 0

    bronze_rows = DeltaTable(table_path(lake, "bronze.opensky_states")).to_pandas()
    assert (bronze_rows.key.tolist(), bronze_rows.value.tolist()) == ([b"3c6444"], [b'{"icao24": "3c6444"}'])
    quarantine = DeltaTable(table_path(lake, "silver.quarantine")).to_pandas()
    assert quarantine[["value", "value_text", "reason"]].values.tolist() == [[b"{not json", "{not json", "malformed_json"]]
    for name in old:
        ensure_table(spark, lake, name)  # in line now
    sent = produce(lake, replay_records(list(read_replay([FIXTURE]))[:5]))
    assert run_layers(lake, list(LAYERS), once=True) == 0
    assert delta_rows(lake, "bronze.opensky_states") == sent + 1


def test_gold_tables_from_before_ml_reason_get_the_column_in_place(spark, lake):
    """Gold tables written before ``ml_reason`` get it when a job starts (one metadata commit, no
    rewrite, no `maintain`): their rows read null, the next micro-batch writes it."""
    from lakehouse.catalog import table
    from lakehouse.table_setup import ADDED_COLUMNS

    for name, added in ADDED_COLUMNS.items():  # a table that old has none of the columns added since
        spec = table(name)
        old = spark.createDataFrame([], spec.schema).drop(*added)
        old.write.format("delta").partitionBy(*spec.partition_by).save(table_path(lake, name))
        assert "ml_reason" not in DeltaTable(table_path(lake, name)).schema().to_arrow().names
    produce(lake, replay_records(list(read_replay([FIXTURE]))[:5]))
    assert run_layers(lake, list(LAYERS), once=True) == 0
    for name, added in ADDED_COLUMNS.items():
        names = DeltaTable(table_path(lake, name)).schema().to_arrow().names
        assert names[-len(added):] == list(added) and names == table(name).columns, name
    live = DeltaTable(table_path(lake, "gold.live_flights")).to_pandas(columns=["icao24", "ml_reason"])
    assert len(live) > 0 and live.ml_reason.isna().all()  # no model: nothing to explain


def test_the_live_map_keeps_at_most_its_own_hours_of_history(lake):
    """``gold.live_flights`` keeps ``maintain.live_retention_hours`` at most; the other tables what
    is asked (``--retention-hours`` included), and a shorter ask shortens the live map's too."""
    from lakehouse.table_setup import retention_hours

    live, week = lake.maintain.live_retention_hours, lake.maintain.retention_hours
    assert live < week
    assert retention_hours(lake, "gold.live_flights") == live
    assert retention_hours(lake, "silver.flights") == week
    assert retention_hours(lake, "gold.live_flights", 500) == live
    assert retention_hours(lake, "gold.anomalies", 500) == 500
    assert retention_hours(lake, "gold.live_flights", 2) == 2
