"""The embedded Apache Kafka broker: ``opensky-lakehouse kafka start|stop|status``.

A real Kafka 4.x broker in KRaft mode (one process acting as broker and controller), listening
only on ``127.0.0.1`` where ``kafka.bootstrap_servers`` points. Its jars come from Maven Central,
pinned with their SHA-1 in ``lakehouse/jars/kafka-<version>.lock``, and are cached under
``spark.cache_dir`` so a second start needs no network (a local ``~/.m2`` repository is used
first when it holds them). Data, configuration, pid and log live in ``kafka.data_dir``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from lakehouse.jvm import java_executable
from lakehouse.kafka_admin import end_offsets, ensure_topic
from lakehouse.net import free_port
from lakehouse.settings import Settings, resolve_path

log = logging.getLogger("lakehouse.kafka_broker")

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
LOCK_DIR = Path(__file__).resolve().parent.parent / "jars"
DOWNLOAD_TIMEOUT_S = 60
DOWNLOAD_ATTEMPTS = 3
STOP_TIMEOUT_S = 30


class BrokerError(RuntimeError):
    """The broker could not be set up, started or reached; the message says what to do."""


@dataclass(frozen=True)
class BrokerPaths:
    data_dir: Path
    libs: Path

    @property
    def config(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.data_dir / "log4j2.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "kraft-logs"

    @property
    def pid(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def state(self) -> Path:
        return self.data_dir / "broker.json"

    @property
    def broker_log(self) -> Path:
        return self.data_dir / "broker.log"


def broker_paths(settings: Settings) -> BrokerPaths:
    cache = Path(resolve_path(settings.spark.cache_dir))
    return BrokerPaths(
        data_dir=Path(resolve_path(settings.kafka.data_dir)),
        libs=cache / f"kafka-{settings.kafka.version}" / "libs",
    )


# ---------------------------------------------------------------------------------------------
# Jars


def _lock_entries(version: str) -> list[tuple[str, str, str, str]]:
    lock = LOCK_DIR / f"kafka-{version}.lock"
    if not lock.is_file():
        known = sorted(p.stem.removeprefix("kafka-") for p in LOCK_DIR.glob("kafka-*.lock"))
        raise BrokerError(f"kafka.version {version!r} has no jar lock file; allowed: {', '.join(known)}")
    entries = []
    for line in lock.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        coords, sha1 = line.split()
        group, artifact, ver = coords.split(":")
        entries.append((group, artifact, ver, sha1))
    return entries


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, target: Path) -> None:
    last_error: Exception | None = None
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            tmp = target.with_suffix(".part")
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, tmp.open("wb") as out:
                shutil.copyfileobj(resp, out)
            tmp.replace(target)
            return
        except OSError as exc:  # URLError and socket timeouts are OSErrors
            last_error = exc
            time.sleep(min(2**attempt, 10))
    raise BrokerError(
        f"could not download {url} ({last_error}); check network access to Maven Central "
        "or copy the jar into the cache by hand"
    )


def ensure_jars(settings: Settings) -> Path:
    """Make sure every pinned broker jar is in the local cache, verified; return the libs dir."""
    paths = broker_paths(settings)
    paths.libs.mkdir(parents=True, exist_ok=True)
    entries = _lock_entries(settings.kafka.version)
    m2 = Path.home() / ".m2" / "repository"
    fetched = 0
    for i, (group, artifact, ver, sha1) in enumerate(entries, 1):
        name = f"{artifact}-{ver}.jar"
        target = paths.libs / name
        if target.is_file() and _sha1(target) == sha1:
            continue
        local = m2 / group.replace(".", "/") / artifact / ver / name
        if local.is_file() and _sha1(local) == sha1:
            shutil.copyfile(local, target)
            continue
        url = f"{MAVEN_CENTRAL}/{group.replace('.', '/')}/{artifact}/{ver}/{name}"
        log.info("kafka jars: downloading %d/%d %s", i, len(entries), name)
        _download(url, target)
        if _sha1(target) != sha1:
            target.unlink()
            raise BrokerError(f"checksum mismatch for {url}; refusing to use it (a proxy rewriting jars?)")
        fetched += 1
    if fetched:
        log.info("kafka jars: %d downloaded into %s", fetched, paths.libs)
    return paths.libs


# ---------------------------------------------------------------------------------------------
# Process


def _read_state(paths: BrokerPaths) -> dict:
    try:
        return json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return {}


def running_pid(settings: Settings) -> int | None:
    """The pid of this data dir's broker if it is alive, else None (stale pid files are removed)."""
    paths = broker_paths(settings)
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        cmdline = ""
    if "kafka.Kafka" not in cmdline:
        paths.pid.unlink(missing_ok=True)
        return None
    return pid


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _check_loopback(settings: Settings) -> None:
    host = settings.kafka.host
    if host not in ("127.0.0.1", "localhost"):
        raise BrokerError(
            f"kafka.bootstrap_servers is {settings.kafka.bootstrap_servers!r}: the embedded broker "
            "only listens on 127.0.0.1; point it at 127.0.0.1:<port> or use an external broker"
        )


def _write_config(settings: Settings, paths: BrokerPaths, controller_port: int) -> None:
    port = settings.kafka.port
    paths.config.write_text(
        "\n".join(
            [
                "# Written by opensky-lakehouse kafka start; edits are overwritten.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={paths.log_dirs}",
                f"num.partitions={settings.kafka.partitions}",
                "offsets.topic.replication.factor=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # Topics are created explicitly with the configured partitions, never by accident.
                "auto.create.topics.enable=false",
                # Record timestamps are the broker's append time, not the producer's claim: silver
                # bounds event times by them (validation.time_position_max_ahead_s).
                "log.message.timestamp.type=LogAppendTime",
                "log.retention.hours=168",
                # The log cleaner's offset map, allocated on the heap when the broker starts: 128 MiB
                # by default, most of the heap's live data here. It dedupes compacted topics (only
                # Kafka's own __consumer_offsets on this broker): 16 MiB holds ~700,000 keys a pass.
                "log.cleaner.dedupe.buffer.size=16777216",
                "",
            ]
        )
    )
    paths.log4j.write_text(
        "\n".join(
            [
                "status = warn",
                "appender.out.type = Console",
                "appender.out.name = STDOUT",
                "appender.out.layout.type = PatternLayout",
                "appender.out.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = WARN",
                "rootLogger.appenderRef.out.ref = STDOUT",
                "logger.server.name = kafka.server.KafkaRaftServer",
                "logger.server.level = INFO",
                "",
            ]
        )
    )


def _java() -> str:
    found = java_executable()
    if not found:
        raise BrokerError("java not found: install a Java 17+ runtime (e.g. apt install openjdk-17-jre-headless)")
    return found


def _java_cmd(settings: Settings, paths: BrokerPaths, main: str, *args: str) -> list[str]:
    return [
        _java(),
        f"-Xmx{settings.kafka.heap}",
        f"-Xms{settings.kafka.heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.log4j}",
        "-cp",
        str(paths.libs / "*"),
        main,
        *args,
    ]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def new_cluster_id() -> str:
    """A random KRaft cluster id (a UUID, URL-safe base64), as Kafka's ``Uuid.randomUuid`` makes
    one: never starting with ``-``, which the storage tool's command line would read as an option
    (one id in 64 did: ``kafka start`` then failed with "expected one argument")."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(settings: Settings, paths: BrokerPaths) -> None:
    if (paths.log_dirs / "meta.properties").is_file():
        return
    cluster_id = new_cluster_id()
    cmd = _java_cmd(settings, paths, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(paths.config))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise BrokerError(f"formatting Kafka storage failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    log.info("kafka: formatted storage in %s (cluster %s)", paths.log_dirs, cluster_id)


def start(settings: Settings) -> dict:
    """Start the broker in the background (idempotent), create the topic; return its status."""
    _check_loopback(settings)
    paths = broker_paths(settings)
    pid = running_pid(settings)
    if pid is None:
        if _port_open("127.0.0.1", settings.kafka.port):
            raise BrokerError(
                f"port {settings.kafka.port} is already in use by another process; stop it or set "
                "kafka.bootstrap_servers to a free port"
            )
        started = time.monotonic()
        ensure_jars(settings)
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        state = _read_state(paths)
        controller_port = settings.kafka.controller_port or state.get("controller_port") or free_port()
        _write_config(settings, paths, controller_port)
        _format_storage(settings, paths)
        with paths.broker_log.open("ab") as out:
            proc = subprocess.Popen(
                _java_cmd(settings, paths, "kafka.Kafka", str(paths.config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI; `kafka stop` ends it
                cwd=paths.data_dir,
            )
        paths.pid.write_text(str(proc.pid))
        paths.state.write_text(
            json.dumps({"controller_port": controller_port, "bootstrap_servers": settings.kafka.bootstrap_servers})
        )
        _wait_serving(settings, paths, proc, started)
        log.info("kafka: broker up on %s in %.1f s (pid %d)", settings.kafka.bootstrap_servers,
                 time.monotonic() - started, proc.pid)
    ensure_topic(settings, settings.kafka.topic, settings.kafka.partitions)
    return status(settings)


def _wait_serving(settings: Settings, paths: BrokerPaths, proc: subprocess.Popen, started: float) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = started + settings.kafka.start_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            paths.pid.unlink(missing_ok=True)
            raise BrokerError(
                f"the Kafka broker exited with code {proc.returncode}; last lines of {paths.broker_log}:\n"
                + _tail(paths.broker_log)
            )
        if _port_open("127.0.0.1", settings.kafka.port):
            try:
                admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers,
                                         request_timeout_ms=5000)
                try:
                    admin.list_topics()
                    return
                finally:
                    admin.close()
            except KafkaError:
                pass
        time.sleep(0.5)
    _terminate(proc.pid)
    paths.pid.unlink(missing_ok=True)
    raise BrokerError(
        f"the Kafka broker did not serve within {settings.kafka.start_timeout_s:.0f} s "
        f"(kafka.start_timeout_s); last lines of {paths.broker_log}:\n" + _tail(paths.broker_log)
    )



def _terminate(pid: int, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True if it ended cleanly."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        _reap(pid)
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    _reap(pid)
    return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(settings: Settings) -> bool:
    """Stop the broker cleanly if it runs. Returns True if a broker was stopped."""
    paths = broker_paths(settings)
    pid = running_pid(settings)
    if pid is None:
        return False
    clean = _terminate(pid)
    paths.pid.unlink(missing_ok=True)
    if not clean:
        log.warning("kafka: broker pid %d did not stop within %d s and was killed", pid, STOP_TIMEOUT_S)
    return True


def status(settings: Settings) -> dict:
    """Whether the broker is up, with the topic's partitions and end offsets."""
    from kafka.errors import KafkaError

    pid = running_pid(settings)
    info: dict = {
        "running": pid is not None,
        "pid": pid,
        "bootstrap_servers": settings.kafka.bootstrap_servers,
        "data_dir": str(broker_paths(settings).data_dir),
        "topic": settings.kafka.topic,
    }
    serving = _port_open(settings.kafka.host if settings.kafka.host != "localhost" else "127.0.0.1",
                         settings.kafka.port)
    info["serving"] = serving
    if serving:
        try:
            offsets = end_offsets(settings, settings.kafka.topic)
            info["partitions"] = len(offsets)
            info["end_offsets"] = offsets
            info["records"] = sum(offsets.values())
        except (KafkaError, OSError) as exc:  # status must report, never crash
            info["error"] = str(exc)
    return info
