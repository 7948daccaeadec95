"""The whole pipeline as one streaming query: Kafka -> bronze, silver and gold in one trigger.

Run: ``opensky-lakehouse run all [--once]`` or
``spark-submit $(opensky-lakehouse spark-conf) lakehouse/jobs/pipeline.py [--once]``.

Each micro-batch of Kafka records goes through the silver step
(:func:`lakehouse.jobs.silver.prepare_silver`) and the gold step
(:func:`lakehouse.jobs.gold.prepare_gold`), the same code the layer jobs run, in one
``foreachBatch`` handler, and is written to ``bronze.opensky_states`` and every silver and gold
table. A state reaches ``gold.live_flights`` in the trigger that read it from
Kafka, instead of waiting for a silver trigger to see bronze's commit and a gold trigger to see
silver's. The layer jobs stay for people who scale the layers apart.

Exactly once: one checkpoint (``<root>/_checkpoints/all/pipeline``); every table is written
once per (``<layer>-<query id>``, batch id) (``lakehouse.jobs.delta_io``), in the order of
:data:`WRITE_ORDER` (live flights first, silver flights last; see :func:`write_pipeline_batch`),
so a batch replayed after a crash skips the writes already committed and recomputes the rest from
the same state. The crash hook's points are the layer jobs' own.

A lakehouse root is fed either by this query or by the layer jobs, never both: each keeps its
own progress in its checkpoints, so switching would read the same records again.
:func:`lakehouse.status.feeding_mode` tells which one a root already uses.
"""

from __future__ import annotations

import logging
import sys
from functools import partial

from lakehouse.catalog import PIPELINE_CHECKPOINT, checkpoint_path, table_path
from lakehouse.jobs import bronze, gold, silver
from lakehouse.jobs.crash import crash_point
from lakehouse.jobs.delta_io import BatchWrites, app_id
from lakehouse.jobs.progress import JobSteps
from lakehouse.jobs.streams import start_stream
from lakehouse.settings import Settings
from lakehouse.table_setup import ensure_table
from lakehouse.transforms.bronze import kafka_to_bronze

log = logging.getLogger("lakehouse.jobs")
# The tables in the order the handler writes them.
WRITE_ORDER = ("gold.live_flights", bronze.TABLE, silver.QUARANTINE, silver.STATS, "gold.anomalies",
               "gold.window_stats", "gold.country_counts", gold.STATE, silver.FLIGHTS)


def write_pipeline_batch(batch_df, batch_id: int, *, settings: Settings, checkpoint: str) -> None:
    """foreachBatch handler: Kafka records -> bronze -> silver -> gold, each table once per batch.

    Computed in layer order, written in the order that shows a state soonest and keeps a replay
    exact: ``gold.live_flights`` first, then bronze, silver's quarantine and dedup stats, the other
    gold tables, ``gold._state``, and ``silver.flights`` last. A replay reads only
    ``silver.flights`` and ``silver._dedup_stats`` (silver) and ``gold._state`` (gold): until
    ``silver.flights`` is written every step recomputes what the first attempt did, and once
    ``gold._state`` is written every gold table holds the batch and is skipped.
    """
    spark = batch_df.sparkSession
    step = JobSteps(spark, "pipeline", batch_id, settings.streaming.timings_log)
    release: list = []
    try:
        records = batch_df.persist()
        release.append(records)
        step("read kafka")
        records.count()  # the fetch from Kafka on its own line of the split (cached: read once)
        writes = BatchWrites(spark, checkpoint, batch_id)
        silver_batch = silver.prepare_silver(records, batch_id, settings=settings,
                                             app=app_id(spark, checkpoint, "silver"), step=step, release=release)
        gold_batch = None
        if silver_batch is not None:
            gold_batch = gold.prepare_gold(silver_batch.flights, batch_id, settings=settings,
                                           app=app_id(spark, checkpoint, "gold"), checkpoint=checkpoint, step=step,
                                           release=release)
        if gold_batch is not None:
            gold_batch.write_live(writes, step)
        crash_point("bronze", batch_id, "before_write")
        step("write bronze")
        writes(records, table_path(settings, bronze.TABLE), app_id(spark, checkpoint, "bronze"), compiled=True)
        crash_point("bronze", batch_id, "after_write")
        if silver_batch is not None:
            silver_batch.write_side_tables(writes, step)
        if gold_batch is not None:
            gold_batch.write_rest(writes, step, release)
        if silver_batch is not None:
            silver_batch.write_flights(writes, step)
    finally:
        step.done()
        for df in reversed(release):  # the derived first: none left to re-plan over the base
            df.unpersist()


def start(spark, settings: Settings, once: bool = False) -> list:
    for name in (bronze.TABLE, silver.FLIGHTS, silver.QUARANTINE, silver.STATS, *gold.OUTPUTS, gold.STATE):
        ensure_table(spark, settings, name)
    checkpoint = checkpoint_path(settings, *PIPELINE_CHECKPOINT)
    return [start_stream(bronze.read_kafka(spark, settings).transform(kafka_to_bronze),
                         partial(write_pipeline_batch, settings=settings, checkpoint=checkpoint),
                         name="pipeline", checkpoint=checkpoint, every=settings.streaming.pipeline_trigger, once=once)]


if __name__ == "__main__":
    from lakehouse.jobs.runner import submit_main

    sys.exit(submit_main("pipeline", start))
