"""Idempotent Delta writes for ``foreachBatch`` handlers: each table once per micro-batch.

Each write of a micro-batch is tagged with its app id (``<layer>-<query id>``, stable across
restarts of one checkpoint) and batch id, in the commit's ``userMetadata``
(``{"app": ..., "batch": ...}``, visible in ``DESCRIBE HISTORY``), so a batch replayed after a
crash writes every table exactly once:

- A handler first calls :func:`begin_batch`, which records ``<checkpoint>/batches/<batch id>``
  before any table is written. No record yet means no table can hold this batch: the first
  attempt writes plain appends, without the Delta transaction-id check (``txnAppId``), which
  rebuilds the table's state with a Spark job on every commit (0.7-0.9 s of a 1.2-1.4 s append
  here, ``pytest -s tests/test_delta_io.py``).
- A replay (the record exists, or a checkpoint older than the records) looks each table's recent
  history up for the batch's tag and skips the tables that have it; the others are written with
  ``txnAppId``/``txnVersion`` as well, so commits of older versions of this code (which used
  only those) are recognised too.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException

from lakehouse.jvm import hadoop_path
from lakehouse.settings import join_path
from lakehouse.spark import compiled_expressions

log = logging.getLogger("lakehouse.jobs")

_QUERY_IDS: dict[str, str] = {}


def query_id(spark, checkpoint: str) -> str:
    """The streaming query's id, read from the checkpoint's ``metadata`` file (stable across
    restarts of that checkpoint)."""
    if checkpoint not in _QUERY_IDS:
        text = "".join(r.value for r in spark.read.text(join_path(checkpoint, "metadata")).collect())
        _QUERY_IDS[checkpoint] = json.loads(text)["id"]
    return _QUERY_IDS[checkpoint]


def app_id(spark, checkpoint: str, job: str) -> str:
    """``<job>-<query id>``.

    A new checkpoint is a new query id, so its batch ids (from 0 again) are new transactions.
    """
    return f"{job}-{query_id(spark, checkpoint)}"


# Spark keeps this many micro-batches of its own offset and commit logs; the batch records likewise.
RECORDS_RETAINED = 100


def begin_batch(spark, checkpoint: str, batch_id: int) -> bool:
    """Record that micro-batch ``batch_id`` of the query at ``checkpoint`` starts writing.

    Returns True when this is a replay: the batch was started before (its record exists), or
    the checkpoint has committed batches but no records (written by an older version).
    """
    fs, record = hadoop_path(spark, f"{checkpoint}/batches/{batch_id}")
    if fs.exists(record):
        return True
    _, records = hadoop_path(spark, f"{checkpoint}/batches")
    _, commits = hadoop_path(spark, f"{checkpoint}/commits")
    legacy = not fs.exists(records) and fs.exists(commits) and len(fs.listStatus(commits)) > 0
    out = fs.create(record, False)
    out.close()
    if batch_id >= RECORDS_RETAINED:
        _, old = hadoop_path(spark, f"{checkpoint}/batches/{batch_id - RECORDS_RETAINED}")
        if fs.exists(old):
            fs.delete(old, False)
    return legacy


def batch_tag(app: str, batch_id: int) -> str:
    return json.dumps({"app": app, "batch": batch_id}, separators=(",", ":"))


def _tag(user_metadata: str | None) -> dict | None:
    try:
        tag = json.loads(user_metadata or "null")
    except ValueError:
        return None
    return tag if isinstance(tag, dict) and "app" in tag and "batch" in tag else None


def committed(spark, path: str, app: str, batch_id: int) -> bool:
    """Whether a commit of the table at ``path`` carries the tag of (``app``, ``batch_id``).

    Reads the history newest first, in growing pages, until the tag or an earlier batch of the
    same app (the app commits its batches in order) is found, or the history ends.
    """
    from delta.tables import DeltaTable

    limit = 20
    while True:
        rows = DeltaTable.forPath(spark, path).history(limit).select("userMetadata").collect()
        for row in rows:
            tag = _tag(row["userMetadata"])
            if tag is not None and tag["app"] == app:
                if tag["batch"] == batch_id:
                    return True
                if tag["batch"] < batch_id:
                    return False
        if len(rows) < limit:
            return False
        limit *= 4


class BatchWrites:
    """The writes of one micro-batch: ``writes(df, path, app[, mode])``, each table once."""

    def __init__(self, spark, checkpoint: str, batch_id: int):
        self.batch_id = batch_id
        self.replay = begin_batch(spark, checkpoint, batch_id)
        if self.replay:
            log.info("batch %d of %s is a replay: tables that already hold it are skipped", batch_id, checkpoint)

    def __call__(self, df, path: str, app: str, mode: str = "append", options: dict | None = None,
                 compiled: bool = False) -> None:
        write_delta(df, path, app, self.batch_id, mode=mode, replay=self.replay, options=options, compiled=compiled)


def _is_conflict(exc: BaseException) -> bool:
    return "Concurrent" in str(exc).split("\n", 1)[0] or "ConcurrentModification" in type(exc).__name__


def write_delta(df, path: str, app: str, batch_id: int, mode: str = "append", attempts: int = 5,
                replay: bool = True, options: dict | None = None, compiled: bool = False) -> None:
    """Write ``df`` to the Delta table at ``path`` once per (``app``, ``batch_id``).

    ``replay=False`` (no attempt of this batch started before: see :func:`begin_batch`) writes
    with the batch's tag only; ``replay=True`` first skips a table that holds the tag, then writes
    with ``txnAppId``/``txnVersion`` too. A conflicting concurrent commit (``maintain`` compacting
    the table meanwhile) fails before anything is committed and is retried with backoff, at most
    ``attempts`` times. ``options`` are further Delta writer options.

    ``compiled``: write with compiled expressions (:func:`lakehouse.spark.compiled_expressions`),
    for a ``df`` that is materialized (cached, a local checkpoint) and so plans to the same code
    every batch: the write's row conversion and Delta's statistics per column run as generated
    code, compiled on the first batch and found in Spark's code cache after (a third less time a
    row). Not for a ``df`` computed in the write with a value of the batch (a time, a count):
    Spark writes such literals into the code, which is then compiled anew every batch.
    """
    if replay and committed(df.sparkSession, path, app, batch_id):
        log.info("%s: batch %d of %s already committed, skipped", path, batch_id, app)
        return
    writer = df.write.format("delta").mode(mode).options(**(options or {})).option(
        "userMetadata", batch_tag(app, batch_id))
    if replay:
        writer = writer.option("txnAppId", app).option("txnVersion", batch_id)
    for attempt in range(1, attempts + 1):
        try:
            with compiled_expressions(df.sparkSession) if compiled else nullcontext():
                writer.save(path)
            return
        except (PySparkException, Py4JError) as exc:
            if not _is_conflict(exc) or attempt == attempts:
                raise
            log.warning("%s: concurrent commit, retrying batch %d (%d/%d)", path, batch_id, attempt, attempts)
            time.sleep(min(0.5 * 2**attempt, 10))
