"""Exactly once under crashes: a layer job stopped dead between two of its writes and restarted
ends with every table of its layer identical, version by version, to an uninterrupted run over
the same input.

The input is real recorded traffic (tests/fixtures/quickstart_excerpt.jsonl.gz: 9 minutes of 6
aircraft, with the repeated positions silver drops and two fast descents gold flags) plus a few
rejected records, in micro-batches small enough that every layer runs two. Crashes come from
the test-only hook ``OPENSKY_LAKEHOUSE_TEST_CRASH`` (lakehouse/jobs/crash.py) at the points
each job lists in ``CRASH_POINTS``, in two kinds:

- the process killed: ``python -m lakehouse run <layer> --once`` dies with exit code 137 (the
  Spark JVM SIGKILLed first: no finally block, no shutdown hook runs);
- the micro-batch failed: the handler raises at the point, the query dies, a new query on the
  same checkpoint replays the batch.

One sequence per layer over one lakehouse root covers every crash point of the job, then a run
without the hook finishes; the result must equal the reference run's tables.

Comparisons leave out what records when a row was processed (``ingested_at``, ``processed_at``,
...) and the run's query id (``silver._dedup_stats.app_id``), and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from deltalake import DeltaTable

from ingestion.replay import read_replay
from ingestion.states import response_to_records
from lakehouse.catalog import PIPELINE_CHECKPOINT, TABLES, checkpoint_path, table_path
from lakehouse.jobs import bronze, gold, pipeline, silver
from lakehouse.jobs.crash import CRASH_ENV, CRASH_EXIT_CODE
from lakehouse.jobs.streams import await_queries
from tests.helpers import REPO, cli_env, produce

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "quickstart_excerpt.jsonl.gz"
JOBS = {"bronze": bronze, "silver": silver, "gold": gold}
LAYER_TABLES = {layer: sorted(n for n in TABLES if n.startswith(f"{layer}.")) for layer in JOBS}
# Each job's writes in the order its handler makes them: CRASH_POINTS[i + 1] follows WRITES[i].
WRITES = {
    "bronze": ("bronze.opensky_states",),
    "silver": ("silver.quarantine", "silver._dedup_stats", "silver.flights"),
    "gold": ("gold.live_flights", "gold.anomalies", "gold.window_stats", "gold.country_counts", "gold._state"),
}
# When a row was processed, and the query id: different in any two runs, whatever they read.
NOT_COMPARED = {"ingested_at", "ingest_date", "processed_at", "quarantined_at", "committed_at", "detected_at",
                "updated_at", "app_id"}
CHECKPOINTS = {"bronze": ("bronze", "opensky_states"), "silver": ("silver", "flights"), "gold": ("gold", "gold")}

DESCENDING = ("4d0218", "86e430")
# Rejected records (not in the recording), spread through the stream so quarantine grows over batches.
BAD = ["{not json", '[1, 2]', json.dumps({"icao24": "3c6444", "schema_version": 2}),
       json.dumps({"icao24": "XYZ123", "schema_version": 1, "time_position": 1633615300})]


def _records() -> list[tuple[str, str]]:
    responses = list(read_replay([FIXTURE]))[48:102]  # 14:08:10 .. 14:17:00 UTC
    # Two aircraft that descend fast in these minutes (rapid_descent fires), four others.
    others = sorted({s[0] for s in responses[0]["states"]} - set(DESCENDING))[:4]
    records = [(rec["icao24"], json.dumps(rec))
               for i, r in enumerate(responses)
               for rec in response_to_records(r, "replay", 1_633_615_690_000 + 10_000 * i)
               if rec["icao24"] in (*DESCENDING, *others)]
    step = len(records) // (len(BAD) + 1)
    for i, value in enumerate(BAD, start=1):
        records.insert(i * step, ("bad", value))
    return records


@pytest.fixture(scope="module")
def source(kafka_settings):
    """Settings with small micro-batches and a topic holding the records (produced once)."""
    from lakehouse.kafka_admin import ensure_topic

    settings = kafka_settings.replace(
        kafka={"topic": f"test.eo.{uuid.uuid4().hex[:8]}", "max_offsets_per_trigger": 160},
        silver={"max_files_per_trigger": 3},
        gold={"max_files_per_trigger": 1},  # silver writes one file per batch
    )
    ensure_topic(settings, settings.kafka.topic, settings.kafka.partitions)
    produce(settings, _records())
    return settings


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return tmp_path_factory.mktemp("exactly_once")


def _at(settings, roots: Path, name: str):
    return settings.replace(storage={"root": str(roots / name)})


def _copy_layer(src, dst, layer: str) -> None:
    """Copy a layer's tables (data files, log, commit times) as they are: the next layer then
    reads the very same files in the very same micro-batches."""
    for name in LAYER_TABLES[layer]:
        if Path(table_path(src, name)).exists():
            shutil.copytree(table_path(src, name), table_path(dst, name))


def _run_in_process(spark, settings, layer: str) -> None:
    await_queries(JOBS[layer].start(spark, settings, once=True))


@pytest.fixture(scope="module")
def reference(spark, source, roots):
    """The uninterrupted run: bronze, silver, gold with --once, one after the other."""
    settings = _at(source, roots, "reference")
    for layer in JOBS:
        _run_in_process(spark, settings, layer)
    return settings


def test_the_uninterrupted_run_fills_every_table_in_two_batches(reference):
    """What the crash tests compare is not trivial: two micro-batches per layer, rows in every
    public table, records quarantined, duplicates dropped, states flagged."""
    for layer, (job, query) in CHECKPOINTS.items():
        commits = Path(checkpoint_path(reference, job, query), "commits")
        assert sorted(p.name for p in commits.iterdir() if p.name.isdigit()) == ["0", "1"], layer
    rows = {name: sum(_rows(reference, name, DeltaTable(table_path(reference, name)).version()).values())
            for name in TABLES}
    assert all(n > 0 for n in rows.values()), rows
    assert rows["silver.quarantine"] == len(BAD)
    assert rows["silver.flights"] < rows["bronze.opensky_states"] - len(BAD)  # duplicates dropped


def _rows(settings, name: str, version: int) -> Counter:
    rows = DeltaTable(table_path(settings, name), version=version).to_pyarrow_table().to_pylist()
    return Counter(tuple((k, _frozen(v)) for k, v in sorted(r.items()) if k not in NOT_COMPARED) for r in rows)


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def assert_layer_equal(got, want, layer: str) -> None:
    """Every table of ``layer``: the same rows now, the same versions, each with the same rows."""
    for name in LAYER_TABLES[layer]:
        newest = DeltaTable(table_path(want, name)).version()
        _assert_same_rows(got, want, name, newest, DeltaTable(table_path(got, name)).version())
        assert DeltaTable(table_path(got, name)).version() == newest, f"{name}: another number of versions"
        for version in range(newest):
            _assert_same_rows(got, want, name, version, version)


def _assert_same_rows(got, want, name: str, want_version: int, got_version: int) -> None:
    have, expected = _rows(got, name, got_version), _rows(want, name, want_version)
    lost, extra = expected - have, have - expected
    assert not lost and not extra, (
        f"{name} version {got_version} (reference {want_version}): {sum(lost.values())} rows lost, "
        f"{sum(extra.values())} extra; lost e.g. {list(lost)[:2]}, extra e.g. {list(extra)[:2]}")


def _txn_version(settings, name: str) -> int:
    """The newest micro-batch committed to a table, -1 if none: the batch of a commit's tag
    (``userMetadata``, lakehouse.jobs.delta_io) or its Delta transaction version."""
    newest = -1
    for log_file in Path(table_path(settings, name), "_delta_log").glob("*.json"):
        for line in log_file.read_text().splitlines():
            action = json.loads(line)
            if action.get("txn"):
                newest = max(newest, action["txn"]["version"])
            tag = (action.get("commitInfo") or {}).get("userMetadata")
            if tag:
                newest = max(newest, json.loads(tag)["batch"])
    return newest


def _batch_left_open(settings, layer: str) -> int:
    """The micro-batch a crash left started (offsets logged) but not committed."""
    checkpoint = Path(checkpoint_path(settings, *CHECKPOINTS[layer]))
    started = max(int(p.name) for p in (checkpoint / "offsets").iterdir() if p.name.isdigit())
    committed = [int(p.name) for p in (checkpoint / "commits").iterdir() if p.name.isdigit()]
    assert started not in committed, f"{layer}: no micro-batch was left open"
    return started


def assert_crashed_between_writes(settings, layer: str, batch: int, point: str) -> None:
    """The batch is open, the writes before ``point`` are committed and the ones after are not."""
    assert _batch_left_open(settings, layer) == batch
    done = JOBS[layer].CRASH_POINTS.index(point)
    for i, name in enumerate(WRITES[layer]):
        assert (_txn_version(settings, name) == batch) == (i < done), (name, point, _txn_version(settings, name))


def _kill_at(settings, layer: str, crash: str) -> None:
    """``python -m lakehouse run <layer> --once`` with the hook set dies at the point, exit 137."""
    proc = subprocess.Popen([sys.executable, "-m", "lakehouse", "run", layer, "--once"], cwd=REPO,
                            env=cli_env(settings, **{CRASH_ENV: crash}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=600)
    finally:
        try:  # anything left of the job (its Python workers)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == CRASH_EXIT_CODE, f"exit {proc.returncode}, not the crash:\n{stderr[-4000:]}"
    assert f"{CRASH_ENV}={crash}: crashing here (exit)" in stderr


def _fail_at(spark, settings, layer: str, crash: str, monkeypatch) -> None:
    """The job in this session with the hook set to ``raise``: the micro-batch fails at the point."""
    monkeypatch.setenv(CRASH_ENV, crash)
    with pytest.raises(Exception, match="InjectedCrash"):
        _run_in_process(spark, settings, layer)
    monkeypatch.delenv(CRASH_ENV)


# Per job, one sequence of crashes over one lakehouse root (its input copied from the reference),
# each run replaying the batch the previous one left half written: every crash point, in
# successive batches and again in a half-written one (later points only: the writes made are
# skipped on replay). Gold's first crash kills the process: a kill costs a JVM start and a first
# micro-batch in a cold JVM (~45 s here), so one only; bronze is killed in tests/test_bronze.py.
CRASHES = {
    "bronze": ("bronze:1:before_write:raise", "bronze:1:after_write:raise"),
    "silver": ("silver:0:before_write:raise", "silver:0:after_quarantine:raise", "silver:1:after_stats:raise",
               "silver:1:after_flights:raise"),
    "gold": ("gold:0:after_window_stats", "gold:0:after_country_counts:raise", "gold:1:before_write:raise",
             "gold:1:after_live_flights:raise", "gold:1:after_anomalies:raise", "gold:1:after_state:raise"),
}
INPUTS = {"bronze": (), "silver": ("bronze",), "gold": ("bronze", "silver")}


@pytest.mark.parametrize("layer", list(CRASHES))
def test_crashes_at_every_point_then_restart_give_the_tables_of_an_uninterrupted_run(
        spark, reference, roots, layer, monkeypatch):
    assert {c.split(":")[2] for c in CRASHES[layer]} == set(JOBS[layer].CRASH_POINTS)
    settings = _at(reference, roots, f"crashed-{layer}")
    for input_layer in INPUTS[layer]:
        _copy_layer(reference, settings, input_layer)
    for crash in CRASHES[layer]:
        _, batch, point, *action = crash.split(":")
        if action == ["raise"]:
            _fail_at(spark, settings, layer, crash, monkeypatch)
        else:
            _kill_at(settings, layer, crash)
        assert_crashed_between_writes(settings, layer, int(batch), point)
    _run_in_process(spark, settings, layer)  # the restart: a JVM that never ran this root
    assert_layer_equal(settings, reference, layer)


# The single-query pipeline (`run all`): one handler writes every layer with the layer jobs' crash
# points, gold.live_flights first (what the map shows) and silver.flights last. Its own
# uninterrupted run is the reference (its micro-batches are Kafka batches for every layer); every
# point of every layer is crashed at, first by a kill, in both batches: in the second, silver's
# duplicate look-up reads silver.flights, which a replay must read as the first attempt did.
PIPELINE_WRITES = ("gold.live_flights", "bronze.opensky_states", "silver.quarantine", "silver._dedup_stats",
                   "gold.anomalies", "gold.window_stats", "gold.country_counts", "gold._state", "silver.flights")
# How many of those writes the handler has made at each crash point.
PIPELINE_POINTS = {
    ("gold", "before_write"): 0, ("gold", "after_live_flights"): 1, ("bronze", "before_write"): 1,
    ("bronze", "after_write"): 2, ("silver", "before_write"): 2, ("silver", "after_quarantine"): 3,
    ("silver", "after_stats"): 4, ("gold", "after_anomalies"): 5, ("gold", "after_window_stats"): 6,
    ("gold", "after_country_counts"): 7, ("gold", "after_state"): 8, ("silver", "after_flights"): 9,
}
PIPELINE_CRASHES = (
    "gold:0:after_live_flights", "silver:0:after_stats:raise", "gold:0:after_anomalies:raise",
    "gold:0:after_window_stats:raise", "gold:0:after_country_counts:raise", "gold:0:after_state:raise",
    "gold:1:before_write:raise", "bronze:1:before_write:raise", "bronze:1:after_write:raise",
    "silver:1:before_write:raise", "silver:1:after_quarantine:raise", "silver:1:after_flights:raise",
)


@pytest.fixture(scope="module")
def pipeline_reference(spark, source, roots):
    settings = _at(source, roots, "pipeline-reference")
    await_queries(pipeline.start(spark, settings, once=True))
    return settings


def test_the_pipeline_writes_every_table_in_two_batches_with_the_rows_of_the_layer_jobs(
        pipeline_reference, reference):
    commits = Path(checkpoint_path(pipeline_reference, *PIPELINE_CHECKPOINT), "commits")
    assert sorted(p.name for p in commits.iterdir() if p.name.isdigit()) == ["0", "1"]
    def rounded(settings, name):  # averages summed in another order differ in the last bits
        rows = _rows(settings, name, DeltaTable(table_path(settings, name)).version())
        return Counter({tuple((k, round(v, 9) if isinstance(v, float) else v) for k, v in row): n
                        for row, n in rows.items()})

    for name in TABLES:  # the same records in, the same rows out, whatever the micro-batches
        if name not in ("gold._state", "silver._dedup_stats"):
            assert rounded(pipeline_reference, name) == rounded(reference, name), name


def test_pipeline_crashes_at_every_point_then_restart_give_the_tables_of_an_uninterrupted_run(
        spark, pipeline_reference, roots, monkeypatch):
    assert {tuple(c.split(":")[:3:2]) for c in PIPELINE_CRASHES} == set(PIPELINE_POINTS) == {
        (layer, point) for layer in JOBS for point in JOBS[layer].CRASH_POINTS}
    assert PIPELINE_WRITES == pipeline.WRITE_ORDER
    settings = _at(pipeline_reference, roots, "crashed-pipeline")
    checkpoint = Path(checkpoint_path(settings, *PIPELINE_CHECKPOINT))
    for crash in PIPELINE_CRASHES:
        layer, batch, point, *action = crash.split(":")
        monkeypatch.setenv(CRASH_ENV, crash)
        if action == ["raise"]:
            with pytest.raises(Exception, match="InjectedCrash"):
                await_queries(pipeline.start(spark, settings, once=True))
        else:
            monkeypatch.delenv(CRASH_ENV)
            _kill_at(settings, "all", crash)
        monkeypatch.delenv(CRASH_ENV, raising=False)
        started = max(int(p.name) for p in (checkpoint / "offsets").iterdir() if p.name.isdigit())
        assert started == int(batch) and not (checkpoint / "commits" / batch).exists(), crash
        done = PIPELINE_POINTS[(layer, point)]
        for i, name in enumerate(PIPELINE_WRITES):
            assert (_txn_version(settings, name) == int(batch)) == (i < done), (crash, name)
    await_queries(pipeline.start(spark, settings, once=True))  # the restart
    for layer in JOBS:
        assert_layer_equal(settings, pipeline_reference, layer)
