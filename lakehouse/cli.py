"""The ``opensky-lakehouse`` command line (also ``python -m lakehouse``).

Each sub-command lives in its own module exposing ``configure(parser)`` and
``run(args, settings) -> int``; modules import Spark, Kafka or Streamlit only inside ``run`` so
that ``--help`` and configuration errors answer instantly. A configuration error prints one line
naming the key and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lakehouse.settings import ConfigError, load_settings

# command name -> (module, one-line help). Order is the order of `--help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "kafka": ("lakehouse.commands.kafka", "start, stop or inspect the embedded Kafka broker"),
    "produce": ("ingestion.cli", "send state vectors to Kafka from OpenSky, a replay or the simulator"),
    "samples": ("ingestion.samples", "fetch real recorded tracks and write replay files"),
    "run": ("lakehouse.commands.run", "run the bronze, silver and gold streaming jobs"),
    "train": ("ml.cli_train", "train the anomaly model on silver.flights"),
    "evaluate": ("ml.cli_evaluate", "measure detection quality on labelled data"),
    "maintain": ("lakehouse.commands.maintain", "compact (OPTIMIZE) and vacuum every table"),
    "status": ("lakehouse.commands.status", "broker, table versions, row counts and lag"),
    "dashboard": ("dashboard.cli", "serve the Streamlit dashboard"),
    "demo": ("lakehouse.commands.demo", "start everything on a recorded capture"),
    "setup": ("lakehouse.commands.setup", "fetch and cache the broker and Spark jars (once)"),
    "spark-conf": ("lakehouse.commands.spark_conf", "print spark-submit options for the layer jobs"),
    "bench": ("bench.cli", "run the benchmark suite"),
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
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part of the project is not installed in this checkout
            raise
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.configure(cmd)
        cmd.set_defaults(_module=module)
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("kafka", "py4j", "urllib3", "streamlit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kafka-python 2.x warns whenever one of its I/O tasks takes over 100 ms, i.e. on any busy
    # machine (111 lines in one benchmark run); delivery failures are counted and reported anyway.
    logging.getLogger("kafka.net.selector").addFilter(_not_a_slow_task_warning)


def _not_a_slow_task_warning(record: logging.LogRecord) -> bool:
    return "threshold). It is blocking the event loop" not in record.getMessage()


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
