"""Shared edge code of the layer jobs: triggers, progress log lines, waiting and stopping.

Every micro-batch of every query logs one line: rows, rows/s, batch duration and, for a Kafka
source, the lag (records in Kafka not yet read by the query). SIGINT and SIGTERM stop the
queries between micro-batches; the checkpoints make the next start continue exactly once.

Test only: :func:`crash_point` stops a ``foreachBatch`` handler dead between two of its writes
when ``OPENSKY_LAKEHOUSE_TEST_CRASH`` says so (see :data:`CRASH_ENV`).
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import timedelta

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

log = logging.getLogger("lakehouse.jobs")

# TEST ONLY. ``OPENSKY_LAKEHOUSE_TEST_CRASH=<job>:<batch id>:<point>[:<action>]``, for example
# ``silver:2:after_flights``: the job's foreachBatch handler stops dead at that point of that
# micro-batch, so tests/test_exactly_once.py can prove that a restart after a crash between any
# two writes loses and duplicates nothing. Each job lists its points in ``CRASH_POINTS``.
# Actions: ``exit`` (default) SIGKILLs the Spark JVM and ends Python with os._exit(137), as a
# ``kill -9`` of the job would (no finally blocks, no shutdown hooks); ``hang`` blocks (at most an
# hour) so a test can SIGKILL the job from outside at exactly that point; ``raise`` fails the
# micro-batch (the query dies, the process lives on). Read from the process environment only,
# never from Settings, so no YAML file or profile can set it; unset, a point costs one lookup.
CRASH_ENV = "OPENSKY_LAKEHOUSE_TEST_CRASH"
CRASH_EXIT_CODE = 137
CRASH_ACTIONS = ("exit", "hang", "raise")


class InjectedCrash(RuntimeError):
    """The ``raise`` action of :data:`CRASH_ENV`."""


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
        self.base = self.sc.getLocalProperty(self.DESCRIPTION)
        self.started = self._mark = time.perf_counter()
        self._current = "setup"
        self.seconds: dict[str, float] = {}
        self.rows: int | None = None

    def _close_current(self) -> None:
        now = time.perf_counter()
        self.seconds[self._current] = self.seconds.get(self._current, 0.0) + now - self._mark
        self._mark = now

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
                "steps_s": {k: round(v, 4) for k, v in self.seconds.items()}})


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


def crash_point(job: str, batch_id: int, point: str) -> None:
    """Crash here if :data:`CRASH_ENV` names this job, batch and point; else return at once."""
    spec = os.environ.get(CRASH_ENV)
    if spec:
        target_job, target_batch, target_point, action = _crash_target(spec)
        if (target_job, target_batch, target_point) == (job, batch_id, point):
            _crash(spec, action)


@functools.lru_cache(maxsize=4)
def _crash_target(spec: str) -> tuple[str, int, str, str]:
    parts = spec.split(":")
    if len(parts) == 3:
        parts.append("exit")
    if len(parts) != 4 or not parts[1].isdigit() or parts[3] not in CRASH_ACTIONS:
        raise ValueError(f"{CRASH_ENV}={spec!r}: expected <job>:<batch id>:<point>[:{'|'.join(CRASH_ACTIONS)}]")
    return parts[0], int(parts[1]), parts[2], parts[3]


def _crash(spec: str, action: str) -> None:
    log.warning("%s=%s: crashing here (%s)", CRASH_ENV, spec, action)
    for handler in logging.getLogger().handlers:
        handler.flush()
    if action == "raise":
        raise InjectedCrash(f"{CRASH_ENV}={spec}")
    if action == "hang":
        time.sleep(3600)
    from pyspark import SparkContext

    jvm = getattr(SparkContext._gateway, "proc", None)  # None when spark-submit started Python
    if jvm is not None:
        # No wait in between: the main thread must not see the JVM gone and exit on its own.
        os.kill(jvm.pid, signal.SIGKILL)
    os._exit(CRASH_EXIT_CODE)


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


def submit_main(job: str, argv: list[str] | None = None) -> int:
    """``spark-submit lakehouse/jobs/<job>.py [--once] [--config FILE] [--profile NAME]``."""
    from lakehouse.cli import setup_logging
    from lakehouse.commands.run import run_layers
    from lakehouse.settings import ConfigError, load_settings

    parser = argparse.ArgumentParser(prog=f"spark-submit lakehouse/jobs/{job}.py")
    parser.add_argument("--once", action="store_true", help="process what is available, then exit 0")
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--profile", metavar="NAME")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        settings = load_settings(config_file=args.config, profile=args.profile)
    except ConfigError as exc:
        print(f"{job}: configuration error: {exc}", file=sys.stderr)
        return 2
    return run_layers(settings, [job], once=args.once)
