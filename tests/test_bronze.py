"""Bronze on a real broker and real Delta: every record once, with its key, value and offsets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lakehouse.catalog import checkpoint_path, table_path
from lakehouse.jobs import bronze
from lakehouse.jobs.crash import CRASH_ENV
from lakehouse.jobs.streams import await_queries
from tests.helpers import REPO, cli_env, delta_rows, delta_version, produce, run_cli

pytestmark = pytest.mark.integration


def _records(n: int, start: int = 0):
    for i in range(start, start + n):
        icao = f"{i % 997:06x}"
        yield icao, json.dumps({"icao24": icao, "schema_version": 1, "seq": i, "callsign": " AFR12  "})


def _run_once(spark, settings):
    await_queries(bronze.start(spark, settings, once=True))


def test_records_land_with_key_value_and_offsets(spark, lake):
    sent = list(_records(500))
    produce(lake, sent)
    _run_once(spark, lake)

    df = spark.read.format("delta").load(table_path(lake, "bronze.opensky_states"))
    rows = df.collect()
    assert len(rows) == 500
    # raw: the bytes as sent, untouched (callsign not trimmed), kept binary
    assert {(bytes(r.key).decode(), bytes(r.value).decode()) for r in rows} == set(sent)
    assert {r.topic for r in rows} == {lake.kafka.topic}
    # Offsets are dense per partition: nothing skipped, nothing doubled.
    by_partition: dict[int, list[int]] = {}
    for r in rows:
        by_partition.setdefault(r.partition, []).append(r.offset)
    assert sum(len(v) for v in by_partition.values()) == 500
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    assert all(r.kafka_timestamp is not None and r.ingest_date is not None for r in rows)
    assert df.columns == ["key", "value", "topic", "partition", "offset", "kafka_timestamp",
                          "ingested_at", "ingest_date"]


def test_second_once_run_adds_nothing(spark, lake):
    produce(lake, _records(200))
    _run_once(spark, lake)
    version = delta_version(lake, "bronze.opensky_states")
    _run_once(spark, lake)
    assert delta_version(lake, "bronze.opensky_states") == version
    assert delta_rows(lake, "bronze.opensky_states") == 200
    produce(lake, _records(50, start=200))
    _run_once(spark, lake)
    assert delta_rows(lake, "bronze.opensky_states") == 250


def test_table_is_reachable_by_name_from_a_new_session(spark, lake):
    produce(lake, _records(10))
    _run_once(spark, lake)
    script = (
        "from lakehouse.settings import load_settings\n"
        "from lakehouse.spark import build_spark\n"
        "spark = build_spark(load_settings())\n"
        "print('COUNT', spark.sql('SELECT count(*) FROM bronze.opensky_states VERSION AS OF 1').first()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=cli_env(lake),
                         capture_output=True, text=True, timeout=300, check=False)
    assert "COUNT 10" in out.stdout, out.stderr[-3000:]


def test_sigkill_mid_stream_then_restart_is_exactly_once(lake):
    """SIGKILL the streaming bronze job while records flow, at the worst moment of a batch: its
    rows committed to Delta, the checkpoint not told (offsets/3 written, commits/3 not). The
    restart loses and duplicates nothing."""
    settings = lake.replace(kafka={"max_offsets_per_trigger": 300})
    # Test-only hook: batch 3 blocks right after its Delta commit, until killed.
    env = cli_env(settings, **{CRASH_ENV: "bronze:3:after_write:hang"})
    checkpoint = Path(checkpoint_path(settings, "bronze", "opensky_states"))
    produce(settings, _records(3000))
    proc = subprocess.Popen([sys.executable, "-m", "lakehouse", "run", "bronze"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while delta_version(settings, "bronze.opensky_states") < 2:  # at least one batch committed
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "bronze never committed a batch"
            time.sleep(0.2)
        produce(settings, _records(2000, start=3000))
        while delta_version(settings, "bronze.opensky_states") < 4:  # batch 3 in Delta (version 0: create)
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "bronze never reached batch 3"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    # Killed inside batch 3, after its Delta commit: the checkpoint has its offsets, not its commit.
    assert (checkpoint / "offsets" / "3").exists() and not (checkpoint / "commits" / "3").exists()
    assert delta_version(settings, "bronze.opensky_states") == 4
    landed_before = delta_rows(settings, "bronze.opensky_states")
    assert 0 < landed_before < 5000, "the kill should land mid-stream"

    result = run_cli(settings, "run", "bronze", "--once")
    assert "bronze batch" in result.stderr  # the per-batch progress line
    from deltalake import DeltaTable

    table = DeltaTable(table_path(settings, "bronze.opensky_states")).to_pandas(columns=["partition", "offset"])
    assert len(table) == 5000
    assert not table.duplicated().any()


def test_progress_line_reports_rows_rate_duration_and_lag(lake):
    produce(lake, _records(100))
    result = run_cli(lake, "run", "bronze", "--once")
    line = next(x for x in result.stderr.splitlines() if "bronze batch 0" in x)
    assert "100 rows" in line and "rows/s" in line and "Kafka lag 0" in line
    assert " s," in line
