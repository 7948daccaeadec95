"""The benchmark suite behind ``opensky-lakehouse bench`` (``lakehouse.app.commands.bench``):
sizes, sections in order, results written (``bench.report``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.env import REPO
from lakehouse.net import free_port

log = logging.getLogger("bench")
SECTIONS = ("reads", "freshness", "memory", "throughput", "scoring")


@dataclasses.dataclass(frozen=True)
class Sizes:
    runs: int = 3
    records: int = 1_000_000
    aircraft: int = 10_000
    warmup_records: int = 20_000
    freshness_rates: tuple[int, ...] = (1_000, 10_000)
    # the same on real recorded tracks (bench.freshness.recorded_fleet)
    recorded_rates: tuple[int, ...] = (1_000,)
    freshness_window_s: float = 120.0
    freshness_warmup_s: float = 60.0
    freshness_drain_s: float = 180.0
    freshness_startup_s: float = 600.0
    # one fresh `run all` stack per rate (full), or one stack for all rates in turn (quick: one JVM start)
    stack_per_rate: bool = True
    poll_s: float = 0.5
    scoring_rows: int = 200_000
    reads_commits: int = 5_000
    reads_rows: int = 1_000
    reads_back: int = 100
    repeats: int = 5

    def replace(self, **changes) -> Sizes:
        return dataclasses.replace(self, **changes)


FULL = Sizes()
QUICK = Sizes(runs=1, records=2_000, aircraft=500, warmup_records=0, freshness_rates=(100, 1_000), recorded_rates=(100,),
              freshness_window_s=15.0, freshness_warmup_s=3.0, freshness_drain_s=45.0, freshness_startup_s=420.0,
              stack_per_rate=False,
              scoring_rows=5_000, reads_commits=120, reads_rows=50, repeats=3)



def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return out + ("+dirty" if dirty else "") if out else "unknown"
    except OSError:
        return "unknown"


def machine(settings) -> dict:
    from importlib.metadata import version

    return {
        "cpus": os.cpu_count(), "load_start": list(os.getloadavg()), "python": platform.python_version(),
        "pyspark": version("pyspark"), "delta_spark": version("delta-spark"), "deltalake": version("deltalake"),
        "kafka_python": version("kafka-python"), "kafka_broker": settings.kafka.version,
        "spark_master": settings.spark.master, "shuffle_partitions": settings.spark.shuffle_partitions,
        "driver_memory": settings.spark.driver_memory, "kafka_partitions": settings.kafka.partitions,
        "producer_compression": settings.producer.compression, "commit": _git_commit(),
        "mem_total_gb": _mem_total_gb(),
    }


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            return round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None


def stop_spark(spark) -> None:
    """Stop the session and its JVM (``SparkSession.stop`` leaves the py4j JVM process running)."""
    if spark is None:
        return
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        SparkContext._gateway = None
        SparkContext._jvm = None


def sizes_from(args) -> Sizes:
    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = sizes.replace(runs=args.runs)
    if args.records:
        sizes = sizes.replace(records=args.records, aircraft=min(sizes.aircraft, args.records))
    if args.window:
        sizes = sizes.replace(freshness_window_s=args.window)
    if args.rates is not None:
        sizes = sizes.replace(freshness_rates=tuple(int(r) for r in args.rates.split(",") if r.strip()))
    if args.recorded_rates is not None:
        sizes = sizes.replace(recorded_rates=tuple(int(r) for r in args.recorded_rates.split(",") if r.strip()))
    return sizes


def run_suite(args, settings) -> int:
    """``opensky-lakehouse bench``: run the sections asked for, write the results; 0, 1 (a section
    failed), 2 (bad arguments) or 130 (interrupted)."""
    import json

    from bench import report
    from bench.env import BenchEnv

    if args.render:
        results = json.loads(Path(args.render).read_text())
        md = Path(args.render).with_suffix(".md")
        md.write_text(f"# Benchmark {md.stem}\n\n" + report.render(results))
        if not args.no_readme:
            report.update_readme(REPO / "README.md", results, os.path.relpath(args.render, REPO))
        print(md)
        return 0
    import signal

    def _terminate(signum, frame):  # SIGTERM unwinds like Ctrl-C: stacks and broker are stopped
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        log.error("bench: unknown section(s) %s; choose from %s", ", ".join(sorted(unknown)), ", ".join(SECTIONS))
        return 2
    sizes = sizes_from(args)
    out_dir = Path(args.out) if args.out else REPO / ("data/bench/results" if args.quick else "bench/results")
    work = Path(args.work) if args.work else REPO / "data/bench/work"
    started = time.time()
    results: dict = {
        "suite": "opensky-lakehouse bench", "format": 1, "quick": bool(args.quick),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(settings), "sizes": dataclasses.asdict(sizes), "sections": {},
    }
    sections = results["sections"]
    log.info("bench: %s suite, sections %s", "quick" if args.quick else "full", ", ".join(wanted))
    interrupted = False
    with BenchEnv(settings, work, keep=args.keep) as env:
        steps = [name for name in ("reads", "throughput", "scoring", "freshness") if name in wanted
                 or (name == "freshness" and "memory" in wanted) or (name == "throughput" and "scoring" in wanted)]
        try:
            _run_steps(steps, sections, env, sizes)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: the sections that finished are still written (below).
            interrupted = True
            log.warning("bench: interrupted; writing the sections that finished")
    failed = any(s.get("status") == "error" for s in sections.values())
    for name in wanted:
        if name not in sections:
            sections[name] = ({"status": "interrupted", "reason": "the run was stopped before this section ended"}
                              if interrupted else {"status": "skipped", "reason": "not selected"})
    for name in SECTIONS:
        sections.setdefault(name, {"status": "skipped", "reason": "not selected"})
    results["machine"]["load_end"] = list(os.getloadavg())
    results["duration_s"] = time.time() - started
    json_path, md_path = report.write_results(results, out_dir)
    log.info("bench: results in %s and %s (%.0f min)", json_path, md_path, results["duration_s"] / 60)
    if not args.quick and not args.no_readme and not interrupted:
        if report.update_readme(REPO / "README.md", results, os.path.relpath(json_path, REPO)):
            log.info("bench: README Performance section updated")
    print(md_path.read_text())
    if interrupted:
        return 130
    return 1 if failed else 0


def _run_steps(steps, sections, env, sizes) -> None:
    """Run the sections in order into ``sections``; a failing one is recorded, the rest go on."""
    from bench import freshness, reads, scoring, throughput

    spark = last = None
    try:
        for i, name in enumerate(steps, 1):
            log.info("bench: === %d/%d %s ===", i, len(steps), name)
            t0 = time.time()
            try:
                if name == "reads":
                    sections["reads"] = reads.run_section(env, sizes)
                elif name == "freshness":
                    sections["freshness"], sections["memory"] = freshness.run_section(env, sizes)
                elif name == "throughput":
                    from lakehouse.jobs.progress import install_progress_logger
                    from lakehouse.spark import build_spark

                    def factory():
                        nonlocal spark
                        # the UI (loopback, free port) only for its REST API: stage timings per step
                        ui = {"spark.ui.enabled": "true", "spark.ui.port": str(free_port())}
                        spark = build_spark(env.settings, app_name="opensky-lakehouse bench", register=False,
                                            extra_conf=ui)
                        install_progress_logger(spark)
                        return spark

                    sections["throughput"], last = throughput.run_section(env, sizes, factory)
                elif name == "scoring":
                    sections["scoring"] = scoring.run_section(env, sizes, spark, last)
            except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others
                log.exception("bench: section %s failed", name)
                sections[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000]}
                if name == "freshness":
                    sections["memory"] = {"status": "error", "error": "the freshness stack failed (see freshness)"}
            log.info("bench: %s done in %.0f s", name, time.time() - t0)
            if name == "scoring" or (name == "throughput" and "scoring" not in steps):
                stop_spark(spark)  # the freshness stacks get the machine to themselves
                spark = None
    finally:
        stop_spark(spark)
