"""Start everything on a recorded capture: broker, replay, lakehouse jobs and dashboard.

Steps (each says what it does): start the embedded Kafka broker; fetch the real OpenSky tracks
shipped with ``traffic==2.13`` and write a replay file (once); replay it into Kafka in the
background (``--speedup``, looping so the sky stays live); run bronze, silver and gold as one
streaming Spark application; serve the dashboard. Ctrl-C stops the jobs, the replay and the
dashboard; ``opensky-lakehouse kafka stop`` stops the broker.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lakehouse.settings import resolve_path

log = logging.getLogger("lakehouse.demo")


def configure(parser) -> None:
    parser.add_argument("--sample", default="quickstart", help="traffic sample collection to replay")
    parser.add_argument("--replay", metavar="FILE", help="replay this file instead of the sample")
    parser.add_argument("--speedup", default="10", help="replay pace (N times real time, or max)")
    parser.add_argument("--no-loop", action="store_true", help="replay once instead of forever")
    parser.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")
    parser.add_argument("--once", action="store_true",
                        help="replay the capture once, run each layer --once, then exit (no dashboard)")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lakehouse", *args]


def _step(title: str, cmd: list[str]) -> None:
    log.info("demo: %s", title)
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise SystemExit(f"demo: '{' '.join(cmd[2:])}' failed (exit {result.returncode}); see above")


def run(args, settings) -> int:
    _step("starting the Kafka broker", _cli("kafka", "start"))
    replay = args.replay
    if not replay:
        replay = os.path.join(resolve_path("data/samples"), f"{args.sample}.jsonl.gz")
        if not Path(replay).is_file():
            _step(f"fetching the real '{args.sample}' tracks (traffic==2.13 wheel)",
                  _cli("samples", "fetch", args.sample, "--out", replay))
    if args.once:
        _step("replaying the capture into Kafka", _cli("produce", "--source", "replay", "--path", replay,
                                                      "--speedup", "max"))
        _step("running bronze, silver and gold once", _cli("run", "all", "--once"))
        _step("lakehouse status", _cli("status"))
        return 0

    children: list[subprocess.Popen] = []
    replay_cmd = _cli("produce", "--source", "replay", "--path", replay, "--speedup", str(args.speedup))
    if not args.no_loop:
        replay_cmd.append("--loop")
    log.info("demo: replaying %s into Kafka at %sx in the background", replay, args.speedup)
    children.append(subprocess.Popen(replay_cmd, start_new_session=True))
    if not args.no_dashboard:
        log.info("demo: dashboard on http://127.0.0.1:%d", settings.dashboard.port)
        children.append(subprocess.Popen(_cli("dashboard"), start_new_session=True))
    try:
        log.info("demo: running bronze, silver and gold (Ctrl-C stops everything but the broker)")
        return subprocess.run(_cli("run", "all"), check=False).returncode
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
