"""Test-only crash hook of the ``foreachBatch`` handlers (``OPENSKY_LAKEHOUSE_TEST_CRASH``).

:func:`crash_point` stops a handler dead between two of its writes when :data:`CRASH_ENV` says
so; unset, a point costs one environment look-up.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time

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


