"""Run layer jobs: ``run bronze|silver|gold|all [--once]``.

Without ``--once`` the queries stream until SIGINT/SIGTERM. ``--once`` processes what is
available and exits 0; for ``all`` the layers then run one after the other (bronze, silver,
gold) so gold sees everything bronze read. Streaming ``all`` runs the three layers as concurrent
queries in one Spark application.
"""

from __future__ import annotations

import importlib
import logging
import sys

LAYERS = ("bronze", "silver", "gold")
log = logging.getLogger("lakehouse.jobs")


def configure(parser) -> None:
    parser.add_argument("layer", choices=(*LAYERS, "all"))
    parser.add_argument("--once", action="store_true", help="process what is available, then exit 0")


def run(args, settings) -> int:
    layers = list(LAYERS) if args.layer == "all" else [args.layer]
    return run_layers(settings, layers, once=args.once)


def job_module(layer: str):
    return importlib.import_module(f"lakehouse.jobs.{layer}")


def run_layers(settings, layers: list[str], once: bool) -> int:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    from lakehouse.jobs.common import (
        await_queries,
        flush_progress,
        install_progress_logger,
        remove_progress_logger,
    )
    from lakehouse.spark import build_spark

    spark = build_spark(settings, app_name=f"opensky-lakehouse {'+'.join(layers)}")
    install_progress_logger(spark)
    try:
        if once:
            for layer in layers:
                queries = job_module(layer).start(spark, settings, once=True)
                try:
                    await_queries(queries)
                finally:
                    flush_progress(spark, queries)
                log.info("%s: processed everything available", layer)
        else:
            queries = [q for layer in layers for q in job_module(layer).start(spark, settings, once=False)]
            log.info("streaming %s; Ctrl-C stops between micro-batches", ", ".join(q.name for q in queries))
            await_queries(queries)
    except (PySparkException, Py4JError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"run {'+'.join(layers)}: failed: {first}\n  Check that the broker serves "
              f"(`opensky-lakehouse kafka status`) and see the log above; restarting resumes "
              "from the checkpoint.", file=sys.stderr)
        return 1
    finally:
        remove_progress_logger(spark)
    return 0
