"""Log lines of every command and job: time, level, logger, message on stderr."""

from __future__ import annotations

import logging
import sys


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
