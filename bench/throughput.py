"""Throughput in records/s: simulator -> Kafka, bronze, silver, gold, end to end, and the reference.

Each run starts from nothing: a fresh topic and lakehouse root. Then, in this order:

1. **produce**: the simulator's snapshots through the ingestion producer (``StateProducer``, the
   path of ``produce --source simulate``: idempotent, ``acks=all``, the configured compression
   and batching). Time from the first snapshot generated to the final flush acknowledged.
2. **reference**: a plain Spark Kafka-to-Delta copy of the topic (the bronze job's Kafka reader,
   no transformation, the Kafka columns written as they come), ``availableNow``.
3. **bronze**, **silver**, **gold**: ``lakehouse.jobs.<layer>.start(spark, settings, once=True)``
   then ``await_queries``, in one SparkSession from ``build_spark`` shared with the reference.

For each Spark step two times are recorded: ``processing_s``, the sum of the ``batchDuration``
of its micro-batches (Spark's own account: reading, transforming, the ``foreachBatch`` writes
and the Delta commit of each batch), which is the figure reported; and ``wall_s`` around the
``--once`` run, with ``noop_s``, the wall time of the same ``--once`` run repeated right after
with nothing new to read (query start, checkpoint, table set-up: the fixed cost of a ``--once``
start, shown separately). Records/s = rows read by the step / ``processing_s``. End to end =
records produced / (produce + bronze + silver + gold processing time). Each step is also given
as a ratio to the reference of the same run.
"""

from __future__ import annotations

import logging
import time

from bench.figures import figure, rate, ratio
from bench.scoring import ensure_model
from lakehouse.jobs.layers import LAYERS, job_module

log = logging.getLogger("bench")
STEPS = ("produce", "reference", *LAYERS, "end_to_end", "pipeline")


def produce(settings, records: int, aircraft: int, seed: int) -> dict:
    """Send ``records`` simulated states to ``settings.kafka.topic``; time and delivery counts."""
    from ingestion.producer import StateProducer
    from ingestion.simulator import Simulator

    snapshots = -(-records // aircraft)
    started = time.perf_counter()
    sim = Simulator(seed=seed, aircraft=aircraft, interval_s=settings.simulator.interval_s,
                    anomaly_rate=settings.simulator.anomaly_rate,
                    start_time=int(time.time()) - snapshots * int(settings.simulator.interval_s))
    producer = StateProducer(settings, "simulator")
    queued = 0
    last_log = started
    try:
        for response in sim.snapshots(snapshots):
            states = response["states"][: records - queued]
            queued += producer.send_response({**response, "states": states})
            if time.perf_counter() - last_log > 10:
                last_log = time.perf_counter()
                log.info("bench:   produce %s/%s states queued (%.0f/s)", f"{queued:,}", f"{records:,}",
                         queued / (last_log - started))
    finally:
        delivery = producer.close()
    seconds = time.perf_counter() - started
    sent = producer.delivered
    if producer.failed or sent != records:
        raise RuntimeError(f"produce: {sent} of {records} records acknowledged, {producer.failed} failed "
                           f"({producer.last_error})")
    return {"rows": sent, "processing_s": seconds, "wall_s": seconds, "pending": delivery.pending}


def _progress_seconds(queries) -> tuple[int, float, int, dict]:
    """Rows read, summed batch duration (s), batches and the summed ``durationMs`` phases (s)."""
    rows, ms, batches, phases = 0, 0, 0, {}
    for q in queries:
        for p in q.recentProgress:
            rows += p.numInputRows
            ms += p.batchDuration
            batches += p.numInputRows > 0
            for phase, value in (p.durationMs or {}).items():
                if phase != "triggerExecution":
                    phases[phase] = phases.get(phase, 0) + value / 1000.0
    return rows, ms / 1000.0, batches, phases


def _run_once(start, spark, settings) -> tuple[list, float]:
    from lakehouse.jobs.streams import await_queries

    t0 = time.perf_counter()
    queries = start(spark, settings, once=True)
    await_queries(queries, poll_s=0.1)
    return queries, time.perf_counter() - t0


def reference_start(spark, settings, once: bool = True) -> list:
    """The physical reference: Kafka -> Delta, no transformation, same reader as bronze."""
    from lakehouse.catalog import checkpoint_path
    from lakehouse.jobs.bronze import read_kafka
    from lakehouse.settings import join_path

    query = (
        read_kafka(spark, settings)
        .writeStream.format("delta")
        .queryName("reference")
        .option("checkpointLocation", checkpoint_path(settings, "bench", "reference"))
        .trigger(availableNow=True)
        .start(join_path(settings.storage.root, "bench", "reference_copy"))
    )
    return [query]


def spark_step(name: str, spark, settings) -> dict:
    start = reference_start if name == "reference" else job_module(name).start
    t0 = time.time()
    queries, wall = _run_once(start, spark, settings)
    t1 = time.time()
    rows, seconds, batches, phases = _progress_seconds(queries)
    _, noop = _run_once(start, spark, settings)
    return {"rows": rows, "processing_s": seconds, "batches": batches, "wall_s": wall, "noop_s": noop,
            "phases_s": phases, "stages": stage_profile(spark, t0, t1)}


def stage_profile(spark, t0: float, t1: float, top: int = 16) -> list[dict] | None:
    """Where a step's time went: its completed Spark stages between ``t0`` and ``t1`` (epoch s),
    grouped by call site (PySpark names a stage after the Python line of its action), from the
    Spark UI's REST API (the bench's session runs with the UI on a loopback port)."""
    import json
    import urllib.request
    from datetime import datetime

    url = spark.sparkContext.uiWebUrl
    if not url:
        return None

    def get(path: str):
        with urllib.request.urlopen(f"{url}/api/v1/{path}", timeout=30) as response:
            return json.loads(response.read())

    def epoch(text: str | None) -> float | None:  # "2026-01-01T12:00:00.123GMT"
        return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() if text else None

    try:
        app = get("applications")[0]["id"]
        stages = get(f"applications/{app}/stages?status=complete")
    except (OSError, ValueError, IndexError, KeyError):
        return None
    groups: dict[str, dict] = {}
    for st in stages:
        begin, end = epoch(st.get("submissionTime")), epoch(st.get("completionTime"))
        if begin is None or end is None or begin < t0 - 1 or end > t1 + 1:
            continue
        # Delta names its internal jobs ("Delta: Compute snapshot ..."); otherwise the action's call site
        what = (st.get("description") or st["name"]).splitlines()[0][:120]
        g = groups.setdefault(what, {"call_site": what, "stages": 0, "wall_s": 0.0, "task_s": 0.0, "tasks": 0})
        g["stages"] += 1
        g["wall_s"] += end - begin
        g["task_s"] += st.get("executorRunTime", 0) / 1000
        g["tasks"] += st.get("numTasks", 0)
    return sorted(groups.values(), key=lambda g: -g["wall_s"])[:top]


def gold_model_versions(settings) -> list[str]:
    """Model versions in the gold.live_flights the gold step wrote (empty: rules only)."""
    from deltalake import DeltaTable

    from lakehouse.catalog import table_path
    from lakehouse.delta_rs import delta_uri, storage_options

    dt = DeltaTable(delta_uri(table_path(settings, "gold.live_flights")), storage_options=storage_options(settings))
    column = dt.to_pyarrow_table(columns=["model_version"]).column("model_version")
    return sorted({v for v in column.to_pylist() if v})


def one_run(env, spark, sizes, run: int, label: str, name: str) -> dict:
    settings = env.settings_for(f"throughput-{name}")
    result: dict = {}
    log.info("bench: [throughput %s] producing %s simulated states", label, f"{sizes.records:,}")
    result["produce"] = produce(settings, sizes.records, sizes.aircraft, seed=run)
    for step in ("reference", *LAYERS):
        if step == "gold":
            result["model_version"] = ensure_model(env, settings)
        result[step] = spark_step(step, spark, settings)
        r = result[step]
        log.info("bench: [throughput %s] %-9s %s rows in %.1f s (%s records/s; --once wall %.1f s, no-op %.1f s)",
                 label, step, f"{r['rows']:,}", r["processing_s"], f"{rate(r['rows'], r['processing_s']) or 0:,.0f}",
                 r["wall_s"], r["noop_s"])
    for step in ("produce", "reference", *LAYERS):
        result[step]["records_per_s"] = rate(result[step]["rows"], result[step]["processing_s"])
    if "gold" in result:
        result["gold"]["scored_with_model"] = gold_model_versions(settings)
    if all(layer in result for layer in LAYERS):
        total = sum(result[s]["processing_s"] for s in ("produce", *LAYERS))
        result["end_to_end"] = {"rows": result["produce"]["rows"], "processing_s": total,
                                "records_per_s": rate(result["produce"]["rows"], total)}
        # `run all`: the same topic, Kafka -> bronze -> silver -> gold in one query, on a root of its own
        pipe = settings.replace(storage={"root": f"{settings.storage.root}-pipeline"})
        result["pipeline"] = spark_step("pipeline", spark, pipe)
        result["pipeline"]["records_per_s"] = rate(result["pipeline"]["rows"], result["pipeline"]["processing_s"])
        log.info("bench: [throughput %s] pipeline  %s rows in %.1f s (%s records/s)", label,
                 f"{result['pipeline']['rows']:,}", result["pipeline"]["processing_s"],
                 f"{result['pipeline']['records_per_s'] or 0:,.0f}")
    result["settings"] = settings
    return result


def run_section(env, sizes, spark_factory) -> dict:
    """Warm-up (not counted) then ``sizes.runs`` measured runs; figures per step."""
    spark = spark_factory()
    if sizes.warmup_records:
        log.info("bench: [throughput] warm-up on %s states (not counted)", f"{sizes.warmup_records:,}")
        warm = sizes.replace(records=sizes.warmup_records, aircraft=min(sizes.aircraft, sizes.warmup_records))
        one_run(env, spark, warm, run=100, label="warm-up", name="warmup")
    runs = []
    for i in range(sizes.runs):
        runs.append(one_run(env, spark, sizes, run=i, label=f"{i + 1}/{sizes.runs}", name=f"run{i + 1}"))
    last_settings = runs[-1].pop("settings")
    for r in runs:
        r.pop("settings", None)
    ref = [r["reference"]["records_per_s"] for r in runs]
    metrics = {}
    for step in STEPS:
        if not all(step in r for r in runs):
            continue
        rps = [r[step]["records_per_s"] for r in runs]
        metrics[step] = {
            "records_per_s": figure(rps),
            "ratio_to_reference": ratio(rps, ref),
            "processing_s": figure(r[step]["processing_s"] for r in runs),
            "rows": figure(r[step]["rows"] for r in runs),
        }
        if step in ("reference", *LAYERS, "pipeline"):
            metrics[step]["wall_s"] = figure(r[step]["wall_s"] for r in runs)
            metrics[step]["noop_s"] = figure(r[step]["noop_s"] for r in runs)
    section = {
        "status": "ok",
        "records": sizes.records,
        "runs": sizes.runs,
        "unit": "records/s",
        "measured": (
            "rows read by the step / its processing time: produce = first snapshot simulated to last "
            "delivery acknowledged (ingestion StateProducer); Spark steps = sum of the micro-batch "
            "batchDuration of an availableNow (--once) run in one shared SparkSession (job start and "
            "checkpoint set-up excluded, reported as noop_s); end_to_end = records / (produce + bronze + "
            "silver + gold); pipeline = `run all`'s single query (Kafka -> bronze -> silver -> gold in each "
            "micro-batch) over the same topic on a root of its own. Reference: Kafka -> Delta copy, no transformation, same Spark session."
        ),
        "metrics": metrics,
        "gold_scored_with_model": runs[-1].get("gold", {}).get("scored_with_model"),
        "detail": runs,
    }
    return section, last_settings
