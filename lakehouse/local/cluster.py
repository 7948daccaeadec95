"""A small real cluster on one machine: Spark standalone master + worker and an S3 server.

For tests, benchmarks and trying the scale-out configuration without Docker. Everything comes
from installed packages (the Spark daemons from pyspark's jars, the S3-compatible server from
``moto[server]``), listens on 127.0.0.1 on free ports, and is stopped by ``stop()`` / the
``with`` block::

    with S3Server(work_dir) as s3, StandaloneCluster(work_dir, cores=1, memory="1g") as cluster:
        settings = settings.replace(spark={"master": cluster.url},
                                    storage={"root": s3.root("lake"), "s3_endpoint": s3.endpoint})
        env = {**settings.to_env(), **s3.credentials}

Run ``python -m lakehouse.local.cluster`` to start both and print the environment that points the
lakehouse at them (Ctrl-C stops them).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from lakehouse.net import free_port

log = logging.getLogger(__name__)

LOG4J_CONF = Path(__file__).resolve().parent / "log4j2.properties"


class ClusterError(RuntimeError):
    """A daemon did not come up in time; the message carries its log tail."""


def spark_home() -> str:
    """pyspark's package directory: it holds ``jars/`` and ``bin/`` like a Spark distribution."""
    import pyspark

    return os.path.dirname(os.path.abspath(pyspark.__file__))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(check, timeout_s: float, what: str, proc: subprocess.Popen, log_path: Path):
    """Poll ``check()`` until it returns a truthy value; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(f"{what} exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            value = check()
        except (OSError, urllib.error.URLError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise ClusterError(f"{what} not ready after {timeout_s:.0f} s:\n{_tail(log_path)}")


def _stop(proc: subprocess.Popen | None, timeout_s: float = 30) -> None:
    """SIGTERM the process group a daemon leads (a worker's executors too), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


class StandaloneCluster:
    """One Spark standalone master and one worker (``cores``, ``memory``) on 127.0.0.1.

    The worker launches executors with pyspark's jars (``SPARK_HOME`` = the pyspark package);
    executors run Python with the driver's ``PYSPARK_PYTHON`` (the factory sets this venv's), so
    on one machine the same virtualenv serves driver and executors.
    """

    def __init__(self, work_dir: str | os.PathLike, cores: int = 1, memory: str = "1g",
                 daemon_heap: str = "256m", start_timeout_s: float = 90):
        self.work_dir = Path(work_dir) / "spark-standalone"
        self.cores, self.memory, self.daemon_heap = cores, memory, daemon_heap
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.webui_port = free_port()
        self.worker_webui_port = free_port()
        self.master: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def webui(self) -> str:
        return f"http://127.0.0.1:{self.webui_port}"

    def state(self) -> dict:
        """The master's JSON status: workers, active and completed applications."""
        with urllib.request.urlopen(f"{self.webui}/json/", timeout=5) as resp:
            return json.loads(resp.read())

    def _java(self, main: str, *args: str, log_name: str) -> subprocess.Popen:
        home = spark_home()
        env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1",
               "SPARK_WORKER_DIR": str(self.work_dir / "work"), "SPARK_NO_DAEMONIZE": "1",
               # Spark's launcher reads the Scala version from a source build unless told;
               # pyspark is no source build (the worker builds executor commands with it).
               "SPARK_SCALA_VERSION": "2.13"}
        cmd = ["java", f"-Xmx{self.daemon_heap}", f"-Dlog4j2.configurationFile=file:{LOG4J_CONF}",
               "-cp", os.path.join(home, "jars", "*"), main, *args]
        log_file = open(self.work_dir / log_name, "w")  # noqa: SIM115 - owned by the child
        try:
            return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.work_dir, start_new_session=True)
        finally:
            log_file.close()

    def start(self) -> StandaloneCluster:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "work").mkdir(exist_ok=True)
        try:
            self.master = self._java(
                "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
                "--webui-port", str(self.webui_port), log_name="master.log")
            _wait(lambda: self.state().get("status") == "ALIVE", self.start_timeout_s,
                  "Spark master", self.master, self.work_dir / "master.log")
            self.worker = self._java(
                "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                "--cores", str(self.cores), "--memory", self.memory,
                "--webui-port", str(self.worker_webui_port), log_name="worker.log")
            _wait(lambda: any(w.get("state") == "ALIVE" for w in self.state().get("workers", [])),
                  self.start_timeout_s, "Spark worker", self.worker, self.work_dir / "worker.log")
        except BaseException:
            self.stop()
            raise
        log.info("Spark standalone cluster at %s (1 worker, %d cores, %s), UI %s",
                 self.url, self.cores, self.memory, self.webui)
        return self

    def stop(self) -> None:
        """Stop the worker (it kills its executors) and then the master."""
        _stop(self.worker)
        _stop(self.master)

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class S3Server:
    """An S3-compatible server (moto) on 127.0.0.1 in its own process, with one bucket.

    The credentials are dummies that the server accepts; they are handed to the lakehouse the
    way real ones are, as ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the environment.
    """

    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

    def __init__(self, work_dir: str | os.PathLike, bucket: str = "lakehouse",
                 region: str = "us-east-1", start_timeout_s: float = 60):
        self.work_dir = Path(work_dir) / "s3-server"
        self.bucket, self.region = bucket, region
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def root(self, prefix: str) -> str:
        """An ``s3a://`` lakehouse root under this server's bucket."""
        return f"s3a://{self.bucket}/{prefix.strip('/')}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"])

    def _serving(self) -> bool:
        with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2) as resp:
            return resp.status == 200

    def start(self) -> S3Server:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.work_dir / "s3.log"
        env = {**os.environ, **self.credentials, "AWS_DEFAULT_REGION": self.region}
        with open(log_path, "w") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=self.work_dir,
                start_new_session=True)
        try:
            _wait(self._serving, self.start_timeout_s, "S3 server (moto)", self.proc, log_path)
            self.client().create_bucket(Bucket=self.bucket)
        except BaseException:
            self.stop()
            raise
        log.info("S3 server at %s, bucket %s", self.endpoint, self.bucket)
        return self

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Start a cluster and an S3 server, print the environment for the lakehouse, wait."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m lakehouse.local.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--memory", default="1g")
    parser.add_argument("--work-dir", default=None, help="logs and worker dirs (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="opensky-cluster-")
    with S3Server(work_dir) as s3, StandaloneCluster(work_dir, args.cores, args.memory) as cluster:
        env = {"OPENSKY_LAKEHOUSE_SPARK__MASTER": cluster.url,
               "OPENSKY_LAKEHOUSE_STORAGE__ROOT": s3.root("lake"),
               "OPENSKY_LAKEHOUSE_STORAGE__S3_ENDPOINT": s3.endpoint,
               "OPENSKY_LAKEHOUSE_STORAGE__S3_PATH_STYLE_ACCESS": "true",
               **s3.credentials}
        print("\n".join(f"export {k}={v}" for k, v in env.items()), flush=True)
        print(f"# master UI {cluster.webui}; logs in {work_dir}; Ctrl-C stops", flush=True)
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        try:
            while not stop["now"]:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
