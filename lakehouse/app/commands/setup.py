"""Fetch and cache everything the lakehouse needs from Maven Central (broker and Spark jars).

After this, starting the broker and Spark needs no network. ``make test`` and ``make demo``
run it; it is quick when the cache is already complete.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("lakehouse.setup")


def configure(parser) -> None:
    parser.add_argument("--skip-spark", action="store_true", help="only the Kafka broker jars")


def run(args, settings) -> int:
    from lakehouse.local.kafka_broker import BrokerError, ensure_jars

    started = time.monotonic()
    try:
        libs = ensure_jars(settings)
    except BrokerError as exc:
        print(f"setup: {exc}")
        return 1
    log.info("setup: Kafka %s broker jars ready in %s", settings.kafka.version, libs)
    if not args.skip_spark:
        from lakehouse.spark import build_spark, spark_packages

        spark = build_spark(settings, app_name="opensky-lakehouse setup", register=False)
        spark.stop()
        log.info("setup: Spark connector jars ready (%s)", ", ".join(spark_packages(settings)))
    log.info("setup: done in %.1f s", time.monotonic() - started)
    return 0
