"""The whole pipeline as one streaming query: Kafka -> bronze, silver and gold in one trigger.

Run: ``opensky-lakehouse run all [--once]`` or
``spark-submit $(opensky-lakehouse spark-conf) lakehouse/jobs/pipeline.py [--once]``.

Each micro-batch of Kafka records is written to ``bronze.opensky_states``, then through the
silver step (:func:`lakehouse.jobs.silver.process_silver`) and the gold step
(:func:`lakehouse.jobs.gold.process_gold`), the same code the layer jobs run, in one
``foreachBatch`` handler. A state reaches ``gold.live_flights`` in the trigger that read it from
Kafka, instead of waiting for a silver trigger to see bronze's commit and a gold trigger to see
silver's. The layer jobs stay for people who scale the layers apart.

Exactly once: one checkpoint (``<root>/_checkpoints/all/pipeline``); every table is written
once per (``<layer>-<query id>``, batch id) (``lakehouse.jobs.delta_io``), in the layer jobs'
order (bronze; quarantine, dedup stats, flights; anomalies, window and country counts, live
flights, gold state), so a batch replayed after a crash skips the writes already committed and
recomputes the rest from the same state. The crash hook's points are the layer jobs' own.

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
from lakehouse.jobs.common import JobSteps, crash_point, trigger
from lakehouse.jobs.delta_io import BatchWrites, app_id
from lakehouse.settings import Settings
from lakehouse.tables import ensure_table
from lakehouse.transforms.bronze import kafka_to_bronze

log = logging.getLogger("lakehouse.jobs")


def write_pipeline_batch(batch_df, batch_id: int, *, settings: Settings, checkpoint: str) -> None:
    """foreachBatch handler: Kafka records -> bronze -> silver -> gold, each table once per batch."""
    spark = batch_df.sparkSession
    step = JobSteps(spark, "pipeline", batch_id, settings.streaming.timings_log)
    release: list = []
    try:
        records = batch_df.persist()
        release.append(records)
        crash_point("bronze", batch_id, "before_write")
        step("write bronze")
        writes = BatchWrites(spark, checkpoint, batch_id)
        writes(records, table_path(settings, bronze.TABLE), app_id(spark, checkpoint, "bronze"))
        crash_point("bronze", batch_id, "after_write")
        flights = silver.process_silver(records, batch_id, settings=settings, app=app_id(spark, checkpoint, "silver"),
                                        writes=writes, step=step, release=release)
        if flights is not None:
            gold.process_gold(flights, batch_id, settings=settings, app=app_id(spark, checkpoint, "gold"),
                              checkpoint=checkpoint, writes=writes, step=step, release=release)
    finally:
        step.done()
        for df in release:
            df.unpersist()


def start(spark, settings: Settings, once: bool = False) -> list:
    for name in (bronze.TABLE, silver.FLIGHTS, silver.QUARANTINE, silver.STATS, *gold.OUTPUTS, gold.STATE):
        ensure_table(spark, settings, name)
    checkpoint = checkpoint_path(settings, *PIPELINE_CHECKPOINT)
    query = (
        bronze.read_kafka(spark, settings)
        .transform(kafka_to_bronze)
        .writeStream.foreachBatch(partial(write_pipeline_batch, settings=settings, checkpoint=checkpoint))
        .queryName("pipeline")
        .option("checkpointLocation", checkpoint)
        .trigger(**trigger(settings.streaming.pipeline_trigger, once))
        .start()
    )
    return [query]


if __name__ == "__main__":
    from lakehouse.jobs.common import submit_main

    sys.exit(submit_main("pipeline"))
