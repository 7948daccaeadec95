"""Starting, waiting for and stopping the layer jobs' streaming queries.

SIGINT and SIGTERM stop the queries between micro-batches; the checkpoints make the next start
continue exactly once.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import time
from datetime import timedelta

from pyspark.sql import DataFrame
from pyspark.sql.streaming import StreamingQuery

from lakehouse.jvm import hadoop_path, read_text

log = logging.getLogger("lakehouse.jobs")


# A new query on a Delta table starts from the table's current files, Delta's initial snapshot:
# the table's state rebuilt and sorted in Spark jobs, ~0.9-1.1 s of latestOffset and getBatch
# before the first micro-batch reads a row (a table of one commit; ~0.8 s of silver's and gold's
# --once run in the throughput bench). While the log holds every commit since the table's
# creation and none removed a file, those commits' files are the table's files: the query starts
# at version 0 instead and Delta reads the files from the commits on the driver (~0.02 s). Up to
# this many commits are read to tell; a longer log takes the snapshot.
LOG_START_MAX_COMMITS = 50
_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
# Actions of a commit that leaves every earlier file in the table and the schema as it was.
_APPEND_ACTIONS = {"add", "commitInfo", "protocol", "txn", "metaData", "domainMetadata"}


def start_version(spark, path: str, checkpoint: str) -> int | None:
    """0 when a query with ``checkpoint`` on the Delta table at ``path`` is new and the table's
    files are those its commits since version 0 added (:data:`LOG_START_MAX_COMMITS`), so the
    query can read them from the log; else None (the checkpoint's offsets, or Delta's snapshot)."""
    fs, offsets = hadoop_path(spark, f"{checkpoint}/offsets")
    if fs.exists(offsets) and any(s.getPath().getName().isdigit() for s in fs.listStatus(offsets)):
        return None
    fs, log_dir = hadoop_path(spark, f"{path}/_delta_log")
    if not fs.exists(log_dir):
        return None
    commits = dict(sorted((int(m.group(1)), s.getPath()) for s in fs.listStatus(log_dir)
                          if (m := _COMMIT_FILE.match(s.getPath().getName()))))
    if not commits or list(commits) != list(range(len(commits))) or len(commits) > LOG_START_MAX_COMMITS:
        return None  # commits before a checkpoint cleaned up, or too many to read
    schemas = set()
    for commit in commits.values():
        for line in read_text(spark, fs, commit).splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            if not action.keys() <= _APPEND_ACTIONS:  # a remove, a change-data file, anything unknown
                return None
            if "metaData" in action:
                schemas.add((action["metaData"].get("schemaString"), tuple(action["metaData"].get("partitionColumns", ()))))
    return 0 if len(schemas) <= 1 else None


def read_delta_stream(spark, path: str, max_files_per_trigger: int = 0, checkpoint: str | None = None) -> DataFrame:
    """The Delta table at ``path`` as a stream (at most ``max_files_per_trigger`` files a trigger;
    0: no limit), for the query of ``checkpoint`` (:func:`start_version`)."""
    reader = spark.readStream.format("delta")
    if max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", max_files_per_trigger)
    if checkpoint is not None and start_version(spark, path, checkpoint) == 0:
        reader = reader.option("startingVersion", 0)
    return reader.load(path)


def start_stream(stream: DataFrame, handler, *, name: str, checkpoint: str, every: str, once: bool) -> StreamingQuery:
    """Start query ``name``: each micro-batch of ``stream`` goes to the ``foreachBatch`` ``handler``,
    progress kept in ``checkpoint``, a trigger every ``every`` (availableNow with ``once``)."""
    return (stream.writeStream.foreachBatch(handler).queryName(name).option("checkpointLocation", checkpoint)
            .trigger(**trigger(every, once)).start())


_INTERVALS: dict[str, timedelta] = {}


def interval(spark, text: str) -> timedelta:
    """``text`` (a Spark SQL interval, e.g. ``10 minutes``) as a timedelta, asked of Spark once per
    process."""
    if text not in _INTERVALS:
        row = spark.sql(f"SELECT TIMESTAMP'2000-03-01 00:00:00' AS t, "
                        f"TIMESTAMP'2000-03-01 00:00:00' - INTERVAL {text} AS h").first()
        _INTERVALS[text] = row["t"] - row["h"]
    return _INTERVALS[text]


def trigger(settings_interval: str, once: bool) -> dict:
    """``writeStream.trigger`` arguments: availableNow for ``--once``, else processing time."""
    return {"availableNow": True} if once else {"processingTime": settings_interval}


# On SIGINT/SIGTERM a running micro-batch gets this long to finish before its query is stopped
# under it (a second signal stops at once). A batch stopped half way is replayed on restart.
STOP_GRACE_S = 120.0


def stop_between_batches(queries: list[StreamingQuery], stopping: dict, grace_s: float = STOP_GRACE_S) -> None:
    """Stop each query while no trigger of it runs, so that its last batch is whole.

    ``StreamingQuery.stop`` interrupts a running batch: its tables would be left with part of the
    batch written until a restart replays it. ``stopping["count"]`` > 1 (a second signal) or the
    grace period ending stops what is left at once.
    """
    deadline = time.monotonic() + grace_s
    pending = [q for q in queries if q.isActive]
    said = False
    while pending:
        hurry = stopping.get("count", 1) > 1 or time.monotonic() > deadline
        for q in list(pending):
            if hurry or not q.isActive or not q.status["isTriggerActive"]:
                q.stop()
                pending.remove(q)
        if pending and not said:
            log.info("waiting for the running micro-batch of %s to finish (signal again to stop at once)",
                     ", ".join(q.name or str(q.id) for q in pending))
            said = True
        time.sleep(0.05)


def await_queries(queries: list[StreamingQuery], poll_s: float = 1.0) -> None:
    """Wait until every query ends; SIGINT/SIGTERM stop them all between micro-batches; a failure
    stops the rest.

    Raises the first query's exception after stopping the others.
    """
    stopping = {"signal": None, "count": 0}

    def _stop(signum, _frame):
        stopping["signal"] = signum
        stopping["count"] += 1

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(q.isActive for q in queries):
            if stopping["signal"] is not None:
                log.info("stopping %d queries after signal %d", len(queries), stopping["signal"])
                stop_between_batches(queries, stopping)
                log.info("stopped %s between micro-batches; a restart resumes from the checkpoint",
                         ", ".join(q.name or str(q.id) for q in queries))
                break
            for q in queries:
                if q.exception() is not None:
                    for other in queries:
                        if other is not q:
                            other.stop()
                    raise q.exception()
            time.sleep(poll_s)
        for q in queries:
            if q.exception() is not None:
                raise q.exception()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


