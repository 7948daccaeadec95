"""Gold on a real broker and real Delta, compared with an independent pandas computation; one
window's states arrive over several micro-batches; tables reachable by name from a new session."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from deltalake import DeltaTable

from lakehouse.catalog import table_path
from lakehouse.jobs import bronze, gold, silver
from lakehouse.jobs.streams import await_queries
from tests import gold_reference as ref
from tests.flight_records import T0, as_records, state, track
from tests.helpers import REPO, cli_env, delta_version, produce

pytestmark = pytest.mark.integration


def pipeline_once(spark, settings):
    for layer in (bronze, silver, gold):
        await_queries(layer.start(spark, settings, once=True))


def read(settings, name, **sort) -> pd.DataFrame:
    """A table read with delta-rs (the dashboard's reader), timestamps as epoch seconds."""
    df = DeltaTable(table_path(settings, name)).to_pandas()
    for col in ("window_start", "window_end", "event_time"):
        if col in df:
            df[col] = df[col].map(lambda t: int(t.timestamp()))
    return df


def assert_same(got: pd.DataFrame, expected: pd.DataFrame, keys: list[str]):
    cols = list(expected.columns)
    got = got[cols].sort_values(keys).reset_index(drop=True)
    expected = expected.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, atol=1e-9)


def traffic():
    """Seven minutes of four aircraft, one squawking 7700, one French on the ground, one that
    jumps 1 degree east between T0+160 and T0+170."""
    jumper = track("3b7a11", T0 + 100, 7, origin_country="France")
    jumper += [state("3b7a11", T0 + 170, 50.0, jumper[-1]["longitude"] + 1.0, origin_country="France")]
    jumper += track("3b7a11", T0 + 180, 24, lon=jumper[-1]["longitude"], origin_country="France")
    return (track("3c6444", T0, 42) + track("4ca1b2", T0 + 5, 40, lat=48.0, squawk="7700")
            + [state("39a0c1", T0 + 10 * i, 43.6, 1.4, on_ground=True, velocity=8.0, baro_altitude=None,
                     vertical_rate=None, origin_country="France") for i in range(30)]
            + jumper)


def test_gold_equals_pandas_with_a_window_split_over_micro_batches(spark, lake):
    states = traffic()
    first = [s for s in states if s["time_position"] <= T0 + 165]
    rest = [s for s in states if s["time_position"] > T0 + 165]
    produce(lake, as_records(first))
    pipeline_once(spark, lake)
    # Newest T0+165: no window is closed yet (the first ends at T0+120, the watermark is T0+45).
    assert read(lake, "gold.window_stats").empty

    produce(lake, as_records(rest))
    pipeline_once(spark, lake)
    expected = ref.frame(states)
    expected["rules"] = ref.rules(expected, lake.rules)
    stats, countries = ref.closed_windows(expected)
    assert list(stats["window_start"]) == [T0, T0 + 120]  # [T0+120, T0+240) spans both batches
    assert_same(read(lake, "gold.window_stats"), stats, ["window_start"])
    assert_same(read(lake, "gold.country_counts"), countries, ["window_start", "origin_country"])

    live = ref.live_flights(expected)
    got_live = read(lake, "gold.live_flights")
    assert_same(got_live, live.assign(event_time=live["time_position"], callsign=live["callsign"].str.strip())[
        ["icao24", "event_time", "latitude", "longitude", "callsign"]], ["icao24"])
    assert got_live["model_version"].isna().all() and not got_live["ml_anomaly"].any()

    flagged = expected[expected["rules"].str.len() > 0]
    got_anomalies = read(lake, "gold.anomalies")
    assert sorted(zip(got_anomalies["icao24"], got_anomalies["event_time"], got_anomalies["rules"].map(list),
                      strict=True)) == sorted(zip(flagged["icao24"], flagged["time_position"], flagged["rules"],
                                                  strict=True))
    assert [T0 + 170] == [t for i, t, r in zip(got_anomalies["icao24"], got_anomalies["event_time"],
                                                got_anomalies["rules"], strict=True) if "position_jump" in r]

    # A state for a window already written is late: the window is not written again.
    windows_version = delta_version(lake, "gold.window_stats")
    produce(lake, as_records([state("aaaaaa", T0 + 30)]))
    pipeline_once(spark, lake)
    assert_same(read(lake, "gold.window_stats"), stats, ["window_start"])
    # nothing to append, no commit (a first attempt writes no empty transaction: lakehouse.jobs.delta_io)
    assert delta_version(lake, "gold.window_stats") == windows_version

    # Tables by name, time travel and history from a new Spark application.
    script = (
        "from lakehouse.settings import load_settings\n"
        "from lakehouse.spark import build_spark\n"
        "spark = build_spark(load_settings())\n"
        "print('FLIGHTS_V1', spark.sql('SELECT count(*) FROM silver.flights VERSION AS OF 1').first()[0])\n"
        "print('LIVE_VERSIONS', spark.sql('DESCRIBE HISTORY gold.live_flights').count())\n"
        "print('ANOMALIES', spark.sql('SELECT count(*) FROM gold.anomalies').first()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=cli_env(lake),
                         capture_output=True, text=True, timeout=300, check=False)
    assert f"FLIGHTS_V1 {len(first)}" in out.stdout, out.stderr[-3000:]
    assert f"LIVE_VERSIONS {delta_version(lake, 'gold.live_flights') + 1}" in out.stdout
    assert f"ANOMALIES {len(flagged)}" in out.stdout


def test_the_state_is_appended_a_generation_per_batch_and_compacted(spark, lake, monkeypatch):
    """``gold._state`` gets one generation of rows per batch, appended (no overwrite's listing of
    the table's files), an overwrite every ``STATE_GENERATIONS``-th; a batch that reads the table
    (a process's first, a replay) takes the newest generation: the tables are those of the pandas
    computation whatever the split."""
    monkeypatch.setattr(gold, "STATE_GENERATIONS", 2)
    states = traffic()
    bounds = [T0 + 100, T0 + 200, T0 + 300]
    parts = [[s for s in states if lo < s["time_position"] <= hi]
             for lo, hi in zip([T0 - 1, *bounds], [*bounds, T0 + 10_000], strict=True)]
    state_path = table_path(lake, gold.STATE)

    def generations() -> list[int]:
        return sorted(set(DeltaTable(state_path).to_pandas(columns=["generation"])["generation"]))

    for i, part in enumerate(parts):
        if i >= 2:  # as a new process would: read gold._state, not the rows this one wrote
            gold._WRITTEN.clear()
        if i == 2:  # generations 1 and 2 are in the table: the newest is the state
            assert generations() == [1, 2]
        produce(lake, as_records(part))
        pipeline_once(spark, lake)
    writes = [h for h in reversed(DeltaTable(state_path).history()) if h["operation"] == "WRITE"]
    assert [h["operationParameters"]["mode"] for h in writes] == ["Overwrite", "Append", "Overwrite", "Append"]
    assert generations() == [3, 4]

    expected = ref.frame(states)
    expected["rules"] = ref.rules(expected, lake.rules)
    stats, countries = ref.closed_windows(expected)
    assert_same(read(lake, "gold.window_stats"), stats, ["window_start"])
    assert_same(read(lake, "gold.country_counts"), countries, ["window_start", "origin_country"])
    live = ref.live_flights(expected)
    assert_same(read(lake, "gold.live_flights"), live.assign(event_time=live["time_position"])[
        ["icao24", "event_time", "latitude", "longitude"]], ["icao24"])
    flagged = expected[expected["rules"].str.len() > 0]
    assert len(read(lake, "gold.anomalies")) == len(flagged)
