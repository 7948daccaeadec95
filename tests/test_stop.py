"""Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group at once (the
command, its Python and JVM, their workers). ``run all`` and ``demo`` must stop in order, say so
in one line per component, exit 0, print no stack trace, and leave the accounting whole."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from ingestion.replay import read_replay
from lakehouse.catalog import table_path
from lakehouse.net import free_port
from lakehouse.status import accounting
from tests.helpers import REPO, cli_env, delta_rows, produce, replay_records

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "quickstart_excerpt.jsonl.gz"
# What a stack trace or an error leaves in a log: Python's and the JVM's.
TRACE = re.compile(r"Traceback|Exception|^\s+at [\w$.]+\(|\bERROR\b|Error while sending", re.MULTILINE)


def _start(settings, log: Path, *args: str) -> subprocess.Popen:
    """``python -m lakehouse ARGS`` as a terminal's foreground job: its own process group."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "lakehouse", *args], cwd=REPO, env=cli_env(settings),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_gold(settings, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while delta_rows(settings, "gold.live_flights") == 0:
        assert proc.poll() is None, f"exited {proc.returncode} before gold had rows:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no gold rows after {timeout:.0f} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)


def _ctrl_c(proc: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    """SIGINT to the process group, as Ctrl-C in a terminal; the log once the command exits."""
    signalled = log.stat().st_size
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    finally:
        try:  # whatever is left of the group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    text = log.read_text()
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{text[-4000:]}"
    return text[signalled:]


def test_ctrl_c_stops_run_all_in_one_line_without_a_trace(lake, tmp_path):
    produce(lake, replay_records(list(read_replay([FIXTURE]))[:60]))
    log = tmp_path / "run-all.log"
    proc = _start(lake, log, "run", "all")
    _wait_for_gold(lake, proc, log)
    after = _ctrl_c(proc, log)
    assert not TRACE.search(after), after[-4000:]
    assert re.search(r"stopped pipeline between micro-batches", after), after[-4000:]
    counts = accounting(lake)
    assert counts["holds"], counts


def test_ctrl_c_stops_the_demo_component_by_component_without_a_trace(lake, tmp_path):
    settings = lake.replace(dashboard={"port": free_port()})
    log = tmp_path / "demo.log"
    proc = _start(settings, log, "demo", "--replay", str(FIXTURE), "--speedup", "max", "--no-loop")
    _wait_for_gold(settings, proc, log)
    after = _ctrl_c(proc, log)
    assert not TRACE.search(after), after[-4000:]
    for line in ("demo: stopping (SIGINT)", "stopped pipeline between micro-batches", "demo: lakehouse jobs stopped",
                 "demo: replay stopped", "demo: dashboard stopped", "demo: stopped; the broker keeps running"):
        assert line in after, f"{line!r} missing:\n{after[-4000:]}"
    counts = accounting(settings)
    assert counts["holds"], counts
    # the demo trained a model on the recording before it started: gold scored with it
    assert "demo: training the anomaly model on the recorded tracks" in log.read_text()
    live = DeltaTable(table_path(settings, "gold.live_flights")).to_pandas(columns=["model_version", "anomaly_score"])
    assert len(live) and live.model_version.notna().all() and live.anomaly_score.notna().all()
