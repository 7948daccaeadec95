"""Idempotent Delta writes for ``foreachBatch`` handlers.

A handler writes each table with ``txnAppId`` = the streaming query's id (stable across restarts
of one checkpoint) and ``txnVersion`` = the batch id: Delta skips a write it has already
committed, so a batch replayed after a crash writes every table exactly once.
"""

from __future__ import annotations

import json
import logging
import time

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException

from lakehouse.settings import join_path

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


def _is_conflict(exc: BaseException) -> bool:
    return "Concurrent" in str(exc).split("\n", 1)[0] or "ConcurrentModification" in type(exc).__name__


def write_delta(df, path: str, app: str, batch_id: int, mode: str = "append", attempts: int = 5) -> None:
    """Write ``df`` to the Delta table at ``path`` once per (``app``, ``batch_id``).

    A conflicting concurrent commit (``maintain`` compacting the table meanwhile) is retried
    with backoff, at most ``attempts`` times; the transaction id keeps a retry from doubling rows.
    """
    writer = df.write.format("delta").mode(mode).option("txnAppId", app).option("txnVersion", batch_id)
    for attempt in range(1, attempts + 1):
        try:
            writer.save(path)
            return
        except (PySparkException, Py4JError) as exc:
            if not _is_conflict(exc) or attempt == attempts:
                raise
            log.warning("%s: concurrent commit, retrying batch %d (%d/%d)", path, batch_id, attempt, attempts)
            time.sleep(min(0.5 * 2**attempt, 10))
