"""Where a new layer query starts on its Delta source (lakehouse.jobs.streams.start_version),
on real Delta tables and real streaming queries."""

from __future__ import annotations

import json

import pytest

from lakehouse.jobs import streams
from lakehouse.jobs.streams import read_delta_stream, start_version

pytestmark = pytest.mark.integration


def _append(spark, path, ids, mode="append"):
    spark.range(*ids).selectExpr("id", "cast(id AS STRING) AS name").write.format("delta").mode(mode).save(path)


def _stream_once(spark, path, checkpoint):
    """Rows and the source's first end offset of one availableNow run of a query on ``path``, a
    file a micro-batch."""
    seen = []
    query = (read_delta_stream(spark, path, 1, checkpoint=checkpoint).writeStream
             .foreachBatch(lambda df, _: seen.extend(r.id for r in df.collect()))
             .option("checkpointLocation", checkpoint).trigger(availableNow=True).start())
    query.awaitTermination()
    progress = [p for p in query.recentProgress if p["numInputRows"]]
    return sorted(seen), json.loads(progress[0].json)["sources"][0]["endOffset"] if progress else None


def test_a_new_query_on_an_append_only_table_reads_its_files_from_the_log(spark, tmp_path):
    path, checkpoint = str(tmp_path / "t"), str(tmp_path / "cp")
    _append(spark, path, (0, 5))
    _append(spark, path, (5, 9))
    assert start_version(spark, path, checkpoint) == 0
    rows, offset = _stream_once(spark, path, checkpoint)
    assert rows == list(range(9))
    assert offset["isStartingVersion"] is False  # from the commits, not Delta's initial snapshot
    _append(spark, path, (9, 12))
    assert start_version(spark, path, checkpoint) is None  # the checkpoint has offsets: it goes on from them
    assert _stream_once(spark, path, checkpoint)[0] == [9, 10, 11]


def test_a_table_whose_commits_removed_files_or_changed_its_schema_starts_from_its_snapshot(spark, tmp_path):
    path, checkpoint = str(tmp_path / "t"), str(tmp_path / "cp")
    _append(spark, path, (0, 5))
    _append(spark, path, (100, 103), mode="overwrite")  # removes the first files
    assert start_version(spark, path, checkpoint) is None
    rows, offset = _stream_once(spark, path, checkpoint)
    assert rows == [100, 101, 102]  # the table as it is, not every file it ever had
    assert offset["isStartingVersion"] is True

    widened = str(tmp_path / "widened")
    _append(spark, widened, (0, 2))
    spark.sql(f"ALTER TABLE delta.`{widened}` ADD COLUMNS (extra STRING)")
    assert start_version(spark, widened, str(tmp_path / "cp2")) is None
    assert _stream_once(spark, widened, str(tmp_path / "cp2"))[0] == [0, 1]


def test_a_log_longer_than_the_limit_or_cleaned_up_starts_from_the_snapshot(spark, tmp_path, monkeypatch):
    path = str(tmp_path / "t")
    for i in range(3):
        _append(spark, path, (i, i + 1))
    assert start_version(spark, path, str(tmp_path / "cp")) == 0
    monkeypatch.setattr(streams, "LOG_START_MAX_COMMITS", 2)
    assert start_version(spark, path, str(tmp_path / "cp")) is None
    monkeypatch.undo()
    (tmp_path / "t" / "_delta_log" / f"{0:020d}.json").unlink()  # as log clean-up after a checkpoint leaves it
    assert start_version(spark, path, str(tmp_path / "cp")) is None
