"""Pure layer transforms (``DataFrame -> DataFrame``): no I/O, chained with ``df.transform``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def built_once(build: Callable[..., T]) -> Callable[..., T]:
    """Cache what ``build`` returns (Columns, lists of them) per argument set, for the running JVM.

    A Column is bound to no DataFrame, but building one is a call into the JVM (0.1-0.5 ms), and
    every micro-batch planned the same few hundred again: ~1 s of a trigger's planning with
    PySpark's call-site capture, ~0.7 s without (docs/scaling.md). The arguments must be
    hashable (settings sections, column names, durations). A session started anew in the same
    process (a new JVM gateway) builds its own.
    """
    cache: dict = {}

    @functools.wraps(build)
    def cached(*args):
        from pyspark import SparkContext

        gateway = SparkContext._gateway
        hit = cache.get(args)
        if hit is not None and hit[0] is gateway:
            return hit[1]
        value = build(*args)
        cache[args] = (gateway, value)
        return value

    cached.cache_clear = cache.clear  # type: ignore[attr-defined]
    return cached
