"""Measure bronze throughput: local[1] vs local[2] vs a standalone cluster, local disk vs S3.

    python -m tests.scale_bench --records 200000 [--modes local1,local2,cluster-file,cluster-s3]

Starts its own Kafka broker, S3 server (moto) and 1-worker standalone cluster on 127.0.0.1
(free ports, temp dirs, all stopped at the end), produces the same N records once, then runs
``python -m lakehouse run bronze --once`` per mode on a fresh lakehouse root. Reports per mode:
the micro-batch rate Spark measured (rows / batch duration: the steady processing rate) and
the wall time of the whole command (JVM start, jars, executor launch included). Numbers are
for docs/scaling.md; the machine it ran on is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lakehouse.local.cluster import S3Server, StandaloneCluster  # noqa: E402
from lakehouse.net import free_port  # noqa: E402
from lakehouse.settings import load_settings  # noqa: E402


def _records(n: int):
    for i in range(n):
        icao = f"{0x3c0000 + i % 12000:06x}"
        t = 1_700_000_000 + i // 12000 * 10
        yield icao, json.dumps({
            "icao24": icao, "callsign": f"DLH{i % 900:03d} ", "origin_country": "Germany",
            "time_position": t, "last_contact": t, "longitude": 8.5 + (i % 97) / 100,
            "latitude": 50.0 + (i % 89) / 100, "baro_altitude": 10000.0, "on_ground": False,
            "velocity": 230.0, "true_track": 90.0, "vertical_rate": 0.0, "sensors": None,
            "geo_altitude": 10100.0, "squawk": "1000", "spi": False, "position_source": 0,
            "category": 0, "schema_version": 1, "snapshot_time": t, "source": "replay",
            "produced_at": 1_700_000_000_000 + i,
        })


def _produce(settings, n: int) -> float:
    from kafka import KafkaProducer

    started = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all",
                             linger_ms=50, batch_size=262144, compression_type="gzip")
    for key, value in _records(n):
        producer.send(settings.kafka.topic, key=key.encode(), value=value.encode())
    producer.flush(timeout=300)
    producer.close()
    return time.monotonic() - started


def _run(settings, extra_env: dict[str, str], worker_pid: int | None = None) -> dict:
    env = {**settings.child_env(REPO), **extra_env}
    started = time.monotonic()
    log_path = Path(tempfile.mkstemp(prefix="bronze-", suffix=".log")[1])
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "lakehouse", "run", "bronze", "--once"], cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        cpu_s = _cpu_while_running(proc, worker_pid, timeout_s=3600)
    wall = time.monotonic() - started
    stderr = log_path.read_text()
    log_path.unlink()
    if proc.returncode != 0:
        raise SystemExit(f"bronze failed:\n{stderr[-4000:]}")
    if os.environ.get("SCALE_BENCH_LOG"):
        Path(os.environ["SCALE_BENCH_LOG"]).write_text(stderr)
    batches = [(int(m.group(1)), float(m.group(2))) for m in
               re.finditer(r"bronze batch \d+: (\d+) rows, [\d,]+ rows/s, ([\d.]+) s", stderr)]
    # The rows that landed, from the table itself (a progress event can be lost at exit).
    from lakehouse.delta_rs import table_info

    reader = settings.replace(secrets={"aws_access_key_id": extra_env.get("AWS_ACCESS_KEY_ID"),
                                       "aws_secret_access_key": extra_env.get("AWS_SECRET_ACCESS_KEY")})
    rows = table_info(reader, "bronze.opensky_states")["rows"]
    # The query's own time: from "started" to "processed everything available" (log clock).
    stamps = [_seconds(m.group(1)) for m in re.finditer(
        r"^(\d\d:\d\d:\d\d) INFO lakehouse.jobs: bronze(?: started|: processed)", stderr, re.M)]
    query_s = stamps[-1] - stamps[0] if len(stamps) >= 2 else 0
    steady = batches[1:]  # batch 0 also pays for table creation, JIT and executor launch
    steady_rows, steady_s = sum(r for r, _ in steady), sum(d for _, d in steady)
    data_bytes = _data_bytes(reader)
    return {"rows": rows, "batches": len(batches), "first_batch": list(batches[0]) if batches else None,
            "steady_rate": round(steady_rows / steady_s) if steady_s else None,
            "query_s": query_s, "query_rate": round(rows / query_s) if query_s else None,
            "wall_s": round(wall, 1), "wall_rate": round(rows / wall),
            "bytes_per_row": round(data_bytes / rows, 1) if rows else None,
            "cpu_s": round(cpu_s, 1), "rows_per_cpu_s": round(rows / cpu_s) if cpu_s else None,
            "load_avg_1m_end": round(os.getloadavg()[0], 1)}


def _cpu_while_running(proc: subprocess.Popen, worker_pid: int | None, timeout_s: float) -> float:
    """CPU seconds (user+system) of the job: the driver's process tree and, on the cluster, the
    executors the worker launched for it. The machine is shared, so wall-clock rates alone
    would measure the neighbours too; CPU time per row does not (much)."""
    import psutil

    last: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    roots = [psutil.Process(proc.pid)] + ([psutil.Process(worker_pid)] if worker_pid else [])
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("bronze run timed out")
        procs = [roots[0], *roots[0].children(recursive=True)]
        for root in roots[1:]:
            procs += root.children(recursive=True)
        for p in procs:
            try:
                t = p.cpu_times()
                last[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        time.sleep(0.5)
    return sum(last.values())


def _data_bytes(settings) -> int:
    """Bytes of the bronze table's data files."""
    from deltalake import DeltaTable

    from lakehouse.catalog import table_path
    from lakehouse.delta_rs import delta_uri, storage_options

    dt = DeltaTable(delta_uri(table_path(settings, "bronze.opensky_states")), storage_options=storage_options(settings))
    return sum(dt.get_add_actions(flatten=True).column("size_bytes").to_pylist())


def _seconds(hms: str) -> int:
    h, m, s = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--batch", type=int, default=50_000, help="kafka.max_offsets_per_trigger")
    parser.add_argument("--modes", default="local1,local2,cluster-file,cluster-s3")
    args = parser.parse_args()
    modes = args.modes.split(",")
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    base = load_settings(profile="test", env={}, dotenv=None).replace(
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "data_dir": str(work / "kafka"),
               "topic": "bench.states", "partitions": args.partitions,
               "max_offsets_per_trigger": args.batch},
        spark={"shuffle_partitions": 2},
    )
    env = base.child_env(REPO)
    subprocess.run([sys.executable, "-m", "lakehouse", "kafka", "start"], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)
    results = {}
    try:
        took = _produce(base, args.records)
        print(f"produced {args.records} records to {args.partitions} partitions in {took:.1f} s", flush=True)
        need_cluster = any(m.startswith("cluster") for m in modes)
        with S3Server(work) as s3, StandaloneCluster(work, cores=1, memory="1g") if need_cluster else _Null() as cl:
            for mode in modes:
                extra = {"SPARK_LOCAL_IP": "127.0.0.1"}
                if mode == "local1":
                    s = base.replace(spark={"master": "local[1]"}, storage={"root": str(work / mode)})
                elif mode == "local2":
                    s = base.replace(spark={"master": "local[2]"}, storage={"root": str(work / mode)})
                elif mode == "local1-s3":
                    s = base.replace(spark={"master": "local[1]"},
                                     storage={"root": s3.root(mode), "s3_endpoint": s3.endpoint})
                    extra.update(s3.credentials)
                elif mode == "cluster-file":
                    s = base.replace(spark={"master": cl.url}, storage={"root": str(work / mode)})
                elif mode == "cluster-s3":
                    s = base.replace(spark={"master": cl.url},
                                     storage={"root": s3.root(mode), "s3_endpoint": s3.endpoint})
                    extra.update(s3.credentials)
                else:
                    raise SystemExit(f"unknown mode {mode}")
                results[mode] = _run(s, extra, cl.worker.pid if mode.startswith("cluster") else None)
                print(f"{mode:<13} {json.dumps(results[mode])}", flush=True)
    finally:
        subprocess.run([sys.executable, "-m", "lakehouse", "kafka", "stop"], cwd=REPO, env=env,
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end")
    print(json.dumps({"records": args.records, "partitions": args.partitions, "results": results}))
    return 0


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


if __name__ == "__main__":
    sys.exit(main())
