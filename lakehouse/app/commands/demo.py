"""Start everything on a recorded capture: broker, replay, lakehouse jobs and dashboard.

Steps (each says what it does): start the embedded Kafka broker; fetch the real OpenSky tracks
shipped with ``traffic==2.13`` and write a replay file (once); train the anomaly model on those
tracks (once, while no model exists: ML scores and explained ML anomalies from the first
micro-batch on; ``opensky-lakehouse train`` later trains on silver); replay it into Kafka in the
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
    from ml.artefact import latest_version, model_dir

    if latest_version(model_dir(settings)) is None:  # ML scores from the first micro-batch on
        _step("training the anomaly model on the recorded tracks", _cli("train", "--replay", replay))
    if args.once:
        _step("replaying the capture into Kafka", _cli("produce", "--source", "replay", "--path", replay,
                                                      "--speedup", "max"))
        _step("running bronze, silver and gold once", _cli("run", "all", "--once"))
        _step("lakehouse status", _cli("status"))
        return 0

    # Every child in a session of its own: a terminal's Ctrl-C reaches the whole foreground process
    # group at once (this process, Python and JVM of the job, the replay, Streamlit), and each
    # would stop on its own, in any order. Only this process gets it; it stops the others in order.
    children: dict[str, subprocess.Popen] = {}
    replay_cmd = _cli("produce", "--source", "replay", "--path", replay, "--speedup", str(args.speedup))
    if not args.no_loop:
        replay_cmd.append("--loop")
    log.info("demo: replaying %s into Kafka at %sx in the background", replay, args.speedup)
    children["replay"] = subprocess.Popen(replay_cmd, start_new_session=True)
    if not args.no_dashboard:
        log.info("demo: dashboard on http://127.0.0.1:%d", settings.dashboard.port)
        children["dashboard"] = subprocess.Popen(_cli("dashboard"), start_new_session=True)
    signals: list[int] = []
    job = None

    def stop(signum, _frame) -> None:
        signals.append(signum)
        if len(signals) == 1:
            log.info("demo: stopping (%s): the lakehouse jobs finish their micro-batch first "
                     "(Ctrl-C again stops them at once), then the replay and the dashboard",
                     signal.Signals(signum).name)
        if job is not None and job.poll() is None:
            job.send_signal(signal.SIGINT)  # the job stops between micro-batches; a second one at once

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        log.info("demo: running bronze, silver and gold (Ctrl-C stops everything but the broker)")
        job = subprocess.Popen(_cli("run", "all"), start_new_session=True)
        code = job.wait()
        log.info("demo: lakehouse jobs stopped (exit %d)", code)
    finally:
        if job is not None and job.poll() is None:  # this process failed: the job must not outlive it
            os.killpg(job.pid, signal.SIGTERM)
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name, child in children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            log.info("demo: %s stopped", name)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if signals:
        log.info("demo: stopped; the broker keeps running (`opensky-lakehouse kafka stop` stops it)")
        return 0
    return code
