"""Shared edge code of the layer jobs: triggers, progress log lines, waiting and stopping.

Every micro-batch of every query logs one line: rows, rows/s, batch duration and, for a Kafka
source, the lag (records in Kafka not yet read by the query). SIGINT and SIGTERM stop the
queries between micro-batches; the checkpoints make the next start continue exactly once.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import signal
import sys
import threading
import time

from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

log = logging.getLogger("lakehouse.jobs")


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

    def __init__(self) -> None:
        super().__init__()
        self._logged: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def log_progress(self, progress) -> None:
        """Log one batch once, whether it comes from the listener bus or from ``recentProgress``."""
        with self._lock:
            key = (str(progress.runId), progress.batchId)
            if key in self._logged:
                return
            self._logged.add(key)
        if progress.numInputRows > 0:
            log.info(progress_line(progress))
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


def install_progress_logger(spark) -> None:
    """Add the progress logger once per session."""
    key = id(spark)
    if key not in _LISTENERS:
        _LISTENERS[key] = ProgressLogger()
        spark.streams.addListener(_LISTENERS[key])


def flush_progress(spark, queries: list[StreamingQuery]) -> None:
    """Log batches the listener bus has not delivered yet (it is asynchronous: a short --once
    run can end before its events arrive)."""
    listener = _LISTENERS.get(id(spark))
    if listener is None:
        return
    for q in queries:
        for progress in q.recentProgress:
            listener.log_progress(progress)


def await_queries(queries: list[StreamingQuery], poll_s: float = 1.0) -> None:
    """Wait until every query ends; SIGINT/SIGTERM stop them all; a failure stops the rest.

    Raises the first query's exception after stopping the others.
    """
    stopping = {"signal": None}

    def _stop(signum, _frame):
        stopping["signal"] = signum

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(q.isActive for q in queries):
            if stopping["signal"] is not None:
                log.info("stopping %d queries after signal %d", len(queries), stopping["signal"])
                for q in queries:
                    q.stop()
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
