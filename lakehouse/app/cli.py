"""The ``opensky-lakehouse`` command line (also ``python -m lakehouse``).

Each sub-command lives in its own module exposing ``configure(parser)`` and
``run(args, settings) -> int``; modules import Spark, Kafka or Streamlit only inside ``run`` so
that ``--help`` and configuration errors answer instantly. A configuration error prints one line
naming the key and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lakehouse.app.commands import (
    bench,
    dashboard,
    demo,
    evaluate,
    kafka,
    maintain,
    produce,
    run,
    samples,
    setup,
    spark_conf,
    status,
    train,
)
from lakehouse.logs import setup_logging
from lakehouse.settings import ConfigError, load_settings

# command name -> (module, one-line help). Order is the order of `--help`.
COMMANDS = {
    "kafka": (kafka, "start, stop or inspect the embedded Kafka broker"),
    "produce": (produce, "send state vectors to Kafka from OpenSky, a replay or the simulator"),
    "samples": (samples, "fetch real recorded tracks and write replay files"),
    "run": (run, "run the bronze, silver and gold streaming jobs"),
    "train": (train, "train the anomaly model on silver.flights"),
    "evaluate": (evaluate, "measure detection quality on labelled data"),
    "maintain": (maintain, "compact (OPTIMIZE) and vacuum every table"),
    "status": (status, "broker, table versions, row counts and lag"),
    "dashboard": (dashboard, "serve the Streamlit dashboard"),
    "demo": (demo, "start everything on a recorded capture"),
    "setup": (setup, "fetch and cache the broker and Spark jars (once)"),
    "spark-conf": (spark_conf, "print spark-submit options for the layer jobs"),
    "bench": (bench, "run the benchmark suite"),
}

log = logging.getLogger("opensky_lakehouse")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opensky-lakehouse",
        description="Real-time OpenSky flight data through Kafka into a Delta Lake lakehouse.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file overlaying conf/default.yaml")
    parser.add_argument("--profile", metavar="NAME", help="profile in conf/ (local, docker, ...)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.configure(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        settings = load_settings(config_file=args.config, profile=args.profile)
    except ConfigError as exc:
        print(f"opensky-lakehouse: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args._module.run(args, settings) or 0)
    except ConfigError as exc:
        print(f"opensky-lakehouse: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
