"""The bench's own isolated environment: a work directory, its own Kafka broker on free ports.

Nothing the suite does touches the user's lakehouse or broker: every measurement gets a fresh
lakehouse root under ``<work>/<name>/lake`` and a fresh topic ``bench.<name>`` on a broker the
suite starts (``<work>/kafka``) and always stops.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lakehouse.net import free_port
from lakehouse.settings import Settings

log = logging.getLogger("bench")
REPO = Path(__file__).resolve().parent.parent


class BenchEnv:
    """Work directory + broker for one suite run. Use as a context manager."""

    def __init__(self, settings: Settings, work: Path, keep: bool = False):
        self.work = Path(work).resolve()
        self.keep = keep
        self.settings = settings.replace(
            kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "data_dir": str(self.work / "kafka"),
                   "controller_port": 0, "topic": "bench.default"},
            storage={"root": str(self.work / "lake")},
            # one model for the whole suite: trained once on the first silver table, then used by
            # gold in every throughput run and every freshness stack, and by the scoring section
            ml={"model_dir": str(self.work / "models")},
        )
        self._broker_started = False

    def __enter__(self) -> BenchEnv:
        from lakehouse.local import kafka_broker

        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        log.info("bench: work directory %s; starting a broker for the suite on %s", self.work,
                 self.settings.kafka.bootstrap_servers)
        for attempt in (1, 2):
            try:
                kafka_broker.start(self.settings)
                break
            except kafka_broker.BrokerError as exc:
                # a random cluster id starting with "-" is read as an option by kafka-storage
                # (about 1 start in 64): a second start with a new id is the bounded way out
                if attempt == 2:
                    raise
                log.warning("bench: broker start failed (%s); retrying once with fresh storage",
                            str(exc).splitlines()[0][:200])
                shutil.rmtree(self.work / "kafka", ignore_errors=True)
        self._broker_started = True
        return self

    def __exit__(self, *exc) -> None:
        from lakehouse.local import kafka_broker

        if self._broker_started:
            kafka_broker.stop(self.settings)
            log.info("bench: broker stopped")
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    @property
    def broker_pid(self) -> int | None:
        from lakehouse.local.kafka_broker import running_pid

        return running_pid(self.settings)

    def settings_for(self, name: str, **sections) -> Settings:
        """Settings with a fresh root ``<work>/<name>/lake`` and topic ``bench.<name>`` (created)."""
        from lakehouse.kafka_admin import ensure_topic

        name = re.sub(r"[^A-Za-z0-9._-]", "-", name)  # Kafka topic names allow only these
        root = self.work / name / "lake"
        settings = self.settings.replace(storage={"root": str(root)}, kafka={"topic": f"bench.{name}"}, **sections)
        ensure_topic(settings, settings.kafka.topic, settings.kafka.partitions)
        return settings

    def cli_env(self, settings: Settings) -> dict[str, str]:
        """Environment handing ``settings`` to a ``python -m lakehouse`` subprocess."""
        return settings.child_env(REPO)

    def spawn(self, settings: Settings, args: list[str], log_name: str) -> subprocess.Popen:
        """Start ``python -m lakehouse ARGS`` in its own process group, output to ``<work>/<log_name>``."""
        out = open(self.work / log_name, "ab")  # noqa: SIM115 - closed by stop()
        proc = subprocess.Popen([sys.executable, "-m", "lakehouse", *args], cwd=REPO, env=self.cli_env(settings),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        proc._bench_log = out  # type: ignore[attr-defined]
        return proc

    def log_tail(self, log_name: str, lines: int = 20) -> str:
        try:
            return "\n".join((self.work / log_name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop(proc: subprocess.Popen, timeout: float = 60.0) -> int | None:
    """SIGTERM ``proc`` itself, SIGKILL its process group after ``timeout``.

    Only the python process gets the SIGTERM: it stops its streaming queries between
    micro-batches and its JVM exits with it. (A SIGTERM to the whole group would also reach the
    JVM, whose shutdown hook then stops Spark under the running queries.)
    """
    import signal

    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("bench: pid %d did not stop within %.0f s; killed", proc.pid, timeout)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
    # children left in the group (a JVM outliving its python parent) end with the group
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out = getattr(proc, "_bench_log", None)
    if out is not None:
        out.close()
    return proc.returncode
