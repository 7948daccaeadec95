"""How the layer jobs report: one log line per micro-batch, the steps of a handler named and timed.

Every micro-batch of every query logs one line: rows, rows/s, batch duration and, for a Kafka
source, the lag (records in Kafka not yet read by the query). With ``streaming.timings_log`` set,
each handler's step split and each trigger's phases are appended there as JSON lines.
"""

from __future__ import annotations

import ast
import json
import logging
import threading
import time

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

log = logging.getLogger("lakehouse.jobs")


class JobSteps:
    """Name the Spark jobs of each step of a foreachBatch handler and time the steps.

    ``<job>: <step>`` becomes the first line of the job description the stream gave the batch
    (the Spark UI shows it). Each step's wall time (from its call to the next step's) is kept;
    ``done()`` puts the stream's description back and, when ``timings_log`` names a file,
    appends the batch's split there as one JSON line (see :func:`append_timings`).
    """

    DESCRIPTION = "spark.job.description"

    def __init__(self, spark, job: str, batch_id: int | None = None, timings_log: str = ""):
        self.sc, self.job, self.batch_id, self.timings_log = spark.sparkContext, job, batch_id, timings_log
        self.spark = spark
        self.base = self.sc.getLocalProperty(self.DESCRIPTION)
        self.started = self._mark = time.perf_counter()
        # Classes Spark compiled so far (only when the split is logged: one call into the JVM a step).
        self._compiled = compiled_classes(spark) if timings_log else None
        self.compiled: dict[str, int] = {}
        self._current = "setup"
        self.seconds: dict[str, float] = {}
        self.rows: int | None = None

    def _close_current(self) -> None:
        now = time.perf_counter()
        self.seconds[self._current] = self.seconds.get(self._current, 0.0) + now - self._mark
        self._mark = now
        if self._compiled is not None:
            count = compiled_classes(self.spark)
            if count is not None and count > self._compiled:
                self.compiled[self._current] = self.compiled.get(self._current, 0) + count - self._compiled
            self._compiled = count

    def __call__(self, step: str) -> None:
        self._close_current()
        self._current = step
        self.sc.setLocalProperty(self.DESCRIPTION, f"{self.job}: {step}" + (f"\n{self.base}" if self.base else ""))

    def done(self) -> None:
        self._close_current()
        self.sc.setLocalProperty(self.DESCRIPTION, self.base)
        if self.timings_log and self.batch_id is not None:
            append_timings(self.timings_log, {
                "kind": "handler", "job": self.job, "batch": self.batch_id, "rows": self.rows,
                "total_s": round(time.perf_counter() - self.started, 4),
                "steps_s": {k: round(v, 4) for k, v in self.seconds.items()},
                **({"compiled": self.compiled} if self._compiled is not None else {})})


def compiled_classes(spark) -> int | None:
    """Classes Spark's code generator has compiled in this JVM so far (``CodegenMetrics``); None
    where the metric cannot be read (a measuring aid never fails a batch)."""
    try:
        return int(spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics
                   .METRIC_COMPILATION_TIME().getCount())
    except (Py4JError, AttributeError):
        return None


_TIMINGS_LOCK = threading.Lock()


def append_timings(path: str, record: dict) -> None:
    """Append one JSON line to the timings log (``streaming.timings_log``): a handler's split
    (``kind: handler``) or a trigger's phases from Spark's progress (``kind: trigger``)."""
    line = json.dumps({"at": round(time.time(), 3), **record}) + "\n"
    with _TIMINGS_LOCK:
        try:
            with open(path, "a") as fh:
                fh.write(line)
        except OSError as exc:  # a measuring aid must never fail a batch
            log.debug("could not append to the timings log %s: %s", path, exc)


def kafka_lag(source_progress) -> int | None:
    """Records in Kafka behind the query: sum over partitions of latest offset - end offset."""
    def parse(offset):
        # JSON text from the listener bus; ``recentProgress`` gives ``str(dict)`` (Python repr).
        if isinstance(offset, dict):
            return offset
        try:
            return json.loads(offset or "null")
        except ValueError:
            return ast.literal_eval(offset)

    try:
        latest = parse(source_progress.latestOffset)
        end = parse(source_progress.endOffset)
    except (TypeError, ValueError):
        return None
    if not isinstance(latest, dict) or not isinstance(end, dict):
        return None
    lag = 0
    for topic, parts in latest.items():
        for part, offset in parts.items():
            lag += max(0, int(offset) - int(end.get(topic, {}).get(part, 0)))
    return lag


def progress_line(progress) -> str:
    rows = progress.numInputRows
    duration_ms = progress.batchDuration
    rate = progress.processedRowsPerSecond or 0.0
    parts = [f"{progress.name or progress.id} batch {progress.batchId}: {rows} rows",
             f"{rate:,.0f} rows/s", f"{duration_ms / 1000:.2f} s"]
    for source in progress.sources:
        if "Kafka" in source.description:
            lag = kafka_lag(source)
            if lag is not None:
                parts.append(f"Kafka lag {lag}")
    return ", ".join(parts)


class ProgressLogger(StreamingQueryListener):
    """One readable log line per micro-batch that read data."""

    def onQueryStarted(self, event) -> None:
        log.info("%s started (id %s)", event.name or event.id, event.id)

    def __init__(self, timings_log: str = "") -> None:
        super().__init__()
        self._logged: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self.timings_log = timings_log

    def log_progress(self, progress) -> None:
        """Log one batch once, whether it comes from the listener bus or from ``recentProgress``."""
        with self._lock:
            key = (str(progress.runId), progress.batchId)
            if key in self._logged:
                return
            self._logged.add(key)
        if progress.numInputRows > 0:
            log.info(progress_line(progress))
            if self.timings_log:
                append_timings(self.timings_log, {
                    "kind": "trigger", "job": progress.name, "batch": progress.batchId,
                    "rows": progress.numInputRows, "phases_ms": dict(progress.durationMs or {})})
        else:
            log.debug(progress_line(progress))

    def onQueryProgress(self, event) -> None:
        self.log_progress(event.progress)

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        if event.exception:
            log.error("query %s failed: %s", event.id, event.exception.splitlines()[0])


_LISTENERS: dict[int, ProgressLogger] = {}


def install_progress_logger(spark, timings_log: str = "") -> None:
    """Add the progress logger once per session (``timings_log``: see :func:`append_timings`)."""
    key = id(spark)
    if key not in _LISTENERS:
        _LISTENERS[key] = ProgressLogger(timings_log)
        spark.streams.addListener(_LISTENERS[key])


def remove_progress_logger(spark) -> None:
    """Take the logger off the listener bus before the process ends: an event the JVM posts to a
    Python callback already torn down prints a Py4J stack trace."""
    listener = _LISTENERS.pop(id(spark), None)
    if listener is not None:
        try:
            # Events already queued (the last batch's progress) are delivered while Python listens.
            spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(10_000)
        except (Py4JError, PySparkException) as exc:
            log.debug("listener bus not drained: %s", exc)
        try:
            spark.streams.removeListener(listener)
        except (Py4JError, PySparkException) as exc:  # the session is going anyway
            log.debug("could not remove the progress listener: %s", exc)


def flush_progress(spark, queries: list[StreamingQuery]) -> None:
    """Log batches the listener bus has not delivered yet (it is asynchronous: a short --once
    run can end before its events arrive)."""
    listener = _LISTENERS.get(id(spark))
    if listener is None:
        return
    for q in queries:
        for progress in q.recentProgress:
            listener.log_progress(progress)


