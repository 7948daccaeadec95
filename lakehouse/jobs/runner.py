"""Run layer jobs in one Spark application: ``run_jobs`` (what ``run <layer>`` calls) and
``submit_main`` (the ``spark-submit lakehouse/jobs/<job>.py`` entry point).

Without ``once`` the queries stream until SIGINT/SIGTERM (stopped between micro-batches); with
``once`` each job processes what is available, one after the other, and the run ends.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

log = logging.getLogger("lakehouse.jobs")

# A job's ``start(spark, settings, once) -> list[StreamingQuery]``.
Start = Callable[..., list]


def run_jobs(settings, jobs: dict[str, Start], once: bool) -> int:
    """Start the jobs (name -> start) in one Spark session and wait for them; 0, or 1 with a line
    saying what to check when Spark fails."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    from lakehouse.jobs.progress import flush_progress, install_progress_logger, remove_progress_logger
    from lakehouse.jobs.streams import await_queries
    from lakehouse.spark import build_spark

    names = "+".join(jobs)
    spark = build_spark(settings, app_name=f"opensky-lakehouse {names}")
    install_progress_logger(spark, settings.streaming.timings_log)
    try:
        if once:
            for name, start in jobs.items():
                queries = start(spark, settings, once=True)
                try:
                    await_queries(queries)
                finally:
                    flush_progress(spark, queries)
                log.info("%s: processed everything available", name)
        else:
            queries = [q for start in jobs.values() for q in start(spark, settings, once=False)]
            log.info("streaming %s; Ctrl-C stops between micro-batches", ", ".join(q.name for q in queries))
            await_queries(queries)
    except (PySparkException, Py4JError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"run {names}: failed: {first}\n  Check that the broker serves "
              f"(`opensky-lakehouse kafka status`) and see the log above; restarting resumes "
              "from the checkpoint.", file=sys.stderr)
        return 1
    finally:
        remove_progress_logger(spark)
    return 0


def submit_main(job: str, start: Start, argv: list[str] | None = None) -> int:
    """``spark-submit lakehouse/jobs/<job>.py [--once] [--config FILE] [--profile NAME]``."""
    from lakehouse.logs import setup_logging
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
    return run_jobs(settings, {job: start}, once=args.once)
