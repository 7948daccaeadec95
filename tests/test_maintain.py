"""``run all --once`` on real recorded tracks, then ``maintain``: compaction and VACUUM keep every
row, honour the configured retention, leave every table readable by delta-rs (the dashboard's
reader), and the streams carry on exactly once afterwards."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from ingestion.replay import read_replay
from ingestion.states import response_to_records
from lakehouse.catalog import TABLES, table_path
from lakehouse.commands import maintain
from lakehouse.commands.run import LAYERS, run_layers
from tests.helpers import delta_rows, produce

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "quickstart_excerpt.jsonl.gz"


def _records(responses):
    return [(rec["icao24"], json.dumps(rec)) for r in responses for rec in response_to_records(r, "replay", 0)]


def _args(**kw):
    defaults = {"table": None, "retention_hours": None, "no_optimize": False, "no_vacuum": False}
    return argparse.Namespace(**{**defaults, **kw})


def test_maintain_compacts_vacuums_and_every_table_stays_readable(spark, lake):
    responses = list(read_replay([FIXTURE]))
    chunks = [responses[:50], responses[50:100], responses[100:150], responses[150:]]
    sent = 0
    for chunk in chunks[:3]:  # three `run all --once` rounds: several small files per table
        sent += produce(lake, _records(chunk))
        assert run_layers(lake, list(LAYERS), once=True) == 0
    assert delta_rows(lake, "bronze.opensky_states") == sent

    present = [n for n in TABLES if maintain.layout(lake, n) is not None]
    public = {n for n in TABLES if not TABLES[n].internal}
    assert public <= set(present), f"run all --once did not create {public - set(present)}"
    rows = {n: delta_rows(lake, n) for n in present}
    assert rows["silver.flights"] > 0 and rows["gold.window_stats"] > 0
    before = {n: maintain.layout(lake, n) for n in present}
    # Delta keeps min/max statistics of each table's keys only (lakehouse.tables.table_properties).
    for name in present:
        config = DeltaTable(table_path(lake, name)).metadata().configuration
        assert config["delta.dataSkippingStatsColumns"] == ",".join(TABLES[name].keys), name
    adds = pa.table(DeltaTable(table_path(lake, "silver.flights")).get_add_actions(flatten=True)).to_pydict()
    assert adds["min.event_time"][0] is not None and adds["max.icao24"][0] is not None
    assert not {c for c in adds if c.startswith("min.")} - {"min.icao24", "min.event_time"}
    # A table made by an older version (Delta's default statistics) is brought in line.
    spark.sql(f"ALTER TABLE delta.`{table_path(lake, 'gold.window_stats')}` "
              "UNSET TBLPROPERTIES ('delta.dataSkippingStatsColumns')")

    assert maintain.run(_args(retention_hours=0), lake) == 0
    config = DeltaTable(table_path(lake, "gold.window_stats")).metadata().configuration
    assert config["delta.dataSkippingStatsColumns"] == "window_start"

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
    sent += produce(lake, _records(chunks[3]))
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
