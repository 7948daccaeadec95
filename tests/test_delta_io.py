"""Idempotent writes of a micro-batch (lakehouse.jobs.delta_io) on real Delta tables.

The first attempt of a batch writes plain tagged appends; a replay skips each table holding the
batch's tag, and recognises batches an older version committed with ``txnAppId`` only. Run with
``-s`` to see what the Delta transaction-id check costs per append on this machine.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from lakehouse.jobs.delta_io import BatchWrites, begin_batch, committed, write_delta
from lakehouse.jobs.progress import compiled_classes
from lakehouse.spark import CODEGEN_CACHE_ENTRIES, MALLOC_ARENAS, compiled_expressions

pytestmark = pytest.mark.integration


def _rows(path) -> int:
    return DeltaTable(str(path)).to_pyarrow_table().num_rows


def test_begin_batch_tells_a_replay_from_a_first_attempt(spark, tmp_path):
    checkpoint = str(tmp_path / "cp")
    assert begin_batch(spark, checkpoint, 0) is False
    assert begin_batch(spark, checkpoint, 1) is False
    assert begin_batch(spark, checkpoint, 1) is True  # batch 1 started before: a replay
    legacy = tmp_path / "legacy"
    (legacy / "commits").mkdir(parents=True)
    (legacy / "commits" / "0").write_text("v1\n{}")
    # a checkpoint with committed batches but no records: written before records existed
    assert begin_batch(spark, str(legacy), 1) is True
    assert begin_batch(spark, str(legacy), 2) is False


def test_each_batch_lands_once_whatever_is_replayed(spark, tmp_path):
    path = str(tmp_path / "t")
    df = spark.range(5)
    write_delta(df, path, "app", 0, replay=False)
    write_delta(df, path, "app", 0, replay=True)  # replay of a committed batch: skipped
    assert _rows(path) == 5
    write_delta(df, path, "app", 1, replay=True)  # replay of a batch not committed: written
    assert _rows(path) == 10
    write_delta(df, path, "other", 1, replay=True)  # another query's batch 1
    assert _rows(path) == 15
    tags = [json.loads(h["userMetadata"]) for h in DeltaTable(path).history() if h.get("userMetadata")]
    assert {(t["app"], t["batch"]) for t in tags} == {("app", 0), ("app", 1), ("other", 1)}
    # A batch an older version wrote with the Delta transaction id only (no tag) is skipped too.
    df.write.format("delta").mode("append").option("txnAppId", "old").option("txnVersion", 7).save(path)
    write_delta(df, path, "old", 7, replay=True)
    assert _rows(path) == 20


def test_committed_reads_back_past_many_commits(spark, tmp_path):
    path = str(tmp_path / "t")
    spark.range(1).write.format("delta").save(path)
    write_delta(spark.range(1), path, "app", 3, replay=False)
    for i in range(22):  # other writers' commits since (a maintain, another query)
        write_delta(spark.range(1), path, f"noise-{i}", 0, replay=False)
    assert committed(spark, path, "app", 3)
    assert not committed(spark, path, "app", 4)
    assert not committed(spark, path, "nobody", 0)


def test_batch_writes_record_the_batch_and_replay_after_a_crash(spark, tmp_path):
    checkpoint, path = str(tmp_path / "cp"), str(tmp_path / "t")
    first = BatchWrites(spark, checkpoint, 0)
    assert not first.replay
    first(spark.range(3), path, "app")
    again = BatchWrites(spark, checkpoint, 0)  # the same batch after a crash
    assert again.replay
    again(spark.range(3), path, "app")
    assert _rows(path) == 3
    assert Path(checkpoint, "batches", "0").exists()


def test_what_the_transaction_id_check_costs(spark, tmp_path):
    """Median of 8 appends of 1,000 rows: tagged only (first attempts) vs with txnAppId (replays)."""
    df = spark.range(1000).selectExpr("id", "cast(id as string) AS s")
    seconds = {}
    for replay in (False, True):
        path = str(tmp_path / f"t-{replay}")
        df.limit(1).write.format("delta").save(path)
        times = []
        for i in range(11):
            started = time.perf_counter()
            df.write.format("delta").mode("append").option("userMetadata", "x").save(path) if not replay else \
                df.write.format("delta").mode("append").option("txnAppId", "a").option("txnVersion", i).save(path)
            times.append(time.perf_counter() - started)
        seconds[replay] = statistics.median(times[3:])
    print(f"\nappend of 1,000 rows: {seconds[False]:.3f} s tagged, {seconds[True]:.3f} s with txnAppId")
    assert _rows(str(tmp_path / "t-False")) == _rows(str(tmp_path / "t-True")) == 11_001


def test_a_compiled_write_lands_the_same_rows_and_statistics_and_compiles_once(spark, tmp_path):
    """write_delta(compiled=True), as the pipeline writes bronze, silver.flights and gold._state:
    the rows and Delta's per-file statistics of an interpreted write, classes compiled on the first
    batch and taken from Spark's code cache on the next, the session's NO_CODEGEN back after."""

    def batch(n: int):  # a materialized batch, as the pipeline hands its writes (a local checkpoint)
        return spark.sql(f"""
            SELECT format_string('%06x', id) AS icao24, IF(id % 7 = 0, NULL, id * 0.25) AS velocity,
                   id % 2 = 0 AS on_ground, IF(id % 5 = 0, NULL, concat('AFR', id)) AS callsign,
                   timestamp_seconds(1796500000 + id) AS event_time,
                   to_date(timestamp_seconds(1796500000 + id * 3600)) AS event_date
            FROM range({n})""").localCheckpoint(eager=True)

    def stats(path: str) -> list:
        adds = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()
        return sorted((a["partition.event_date"], a["num_records"], json.dumps({k: a[k] for k in a if k.startswith(
            ("min.", "max.", "null_count."))}, sort_keys=True, default=str)) for a in adds)

    assert spark.conf.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN"
    first = batch(500)
    for name in ("interpreted", "compiled"):
        first.limit(0).write.format("delta").partitionBy("event_date").save(str(tmp_path / name))  # the table
    write_delta(first, str(tmp_path / "interpreted"), "app", 0, replay=False)
    before = compiled_classes(spark)
    write_delta(first, str(tmp_path / "compiled"), "app", 0, replay=False, compiled=True)
    on_first = compiled_classes(spark) - before
    assert spark.conf.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN"
    assert spark.conf.get("spark.sql.subexpressionElimination.enabled") == "false"
    assert on_first > 0  # generated code wrote the rows
    written = {name: spark.read.format("delta").load(str(tmp_path / name)) for name in ("interpreted", "compiled")}
    assert sorted(written["compiled"].collect()) == sorted(written["interpreted"].collect()) == sorted(first.collect())
    compiled_stats = stats(str(tmp_path / "compiled"))
    assert compiled_stats == stats(str(tmp_path / "interpreted"))
    assert len(compiled_stats) > 20 and all('"min.velocity"' in s and '"null_count.callsign"' in s for *_, s in compiled_stats)
    # The next batch: a new local checkpoint of other rows, the same code, none compiled.
    before = compiled_classes(spark)
    write_delta(batch(300), str(tmp_path / "compiled"), "app", 1, replay=False, compiled=True)
    assert compiled_classes(spark) - before == 0
    assert _rows(str(tmp_path / "compiled")) == 800


def test_the_code_cache_keeps_more_classes_than_a_trigger_compiles(spark):
    """More distinct generated classes than Spark's default cache holds (100) stay compiled: a
    `run all` trigger compiles ~100 on its first batch, and a batch that planned a few new ones
    used to evict the rest, compiled again on the next batch (spark.sql.codegen.cache.maxEntries)."""

    assert int(spark.conf.get("spark.sql.codegen.cache.maxEntries")) == CODEGEN_CACHE_ENTRIES > 150
    rows = spark.range(3)

    def run(k: int):  # a projection of its own: the literal is part of the generated code
        return rows.select((F.col("id") * 1000 + F.lit(k)).alias("x")).collect()

    with compiled_expressions(spark):
        first = compiled_classes(spark)
        assert [r.x for r in run(7_000_001)] == [7_000_001, 7_001_001, 7_002_001]
        assert compiled_classes(spark) > first  # generated code ran
        for k in range(150):  # 150 other classes after it
            run(8_000_000 + k)
        before = compiled_classes(spark)
        assert [r.x for r in run(7_000_001)] == [7_000_001, 7_001_001, 7_002_001]
        assert compiled_classes(spark) == before  # still in the cache: not compiled again


def test_the_jvm_runs_with_few_malloc_arenas(spark):
    """The session's JVM inherits MALLOC_ARENA_MAX (glibc's default, 8 arenas a core, kept ~80 MB
    more of `run all`'s JVM resident), unless the environment set its own."""
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    with open(f"/proc/{pid}/environ", "rb") as fh:
        env = dict(item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item)
    assert env[b"MALLOC_ARENA_MAX"] == os.environ.get("MALLOC_ARENA_MAX", MALLOC_ARENAS).encode()
