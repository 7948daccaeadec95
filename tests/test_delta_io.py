"""Idempotent writes of a micro-batch (lakehouse.jobs.delta_io) on real Delta tables.

The first attempt of a batch writes plain tagged appends; a replay skips each table holding the
batch's tag, and recognises batches an older version committed with ``txnAppId`` only. Run with
``-s`` to see what the Delta transaction-id check costs per append on this machine.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from lakehouse.jobs.delta_io import BatchWrites, begin_batch, committed, write_delta

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
