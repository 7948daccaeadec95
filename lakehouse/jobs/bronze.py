"""Bronze job: Kafka topic -> ``bronze.opensky_states``, exactly once.

Run: ``opensky-lakehouse run bronze [--once]`` or
``spark-submit $(opensky-lakehouse spark-conf) lakehouse/jobs/bronze.py [--once]``.
A new checkpoint starts at ``kafka.starting_offsets`` (earliest by default). The handler
:func:`write_bronze_batch` appends each micro-batch once, tagged with the query id and batch id
(``lakehouse.jobs.delta_io``; on a replay also as ``txnAppId``/``txnVersion``, the ids Delta's
own streaming sink used), so a batch replayed after a crash is skipped: records land exactly once.
"""

from __future__ import annotations

import sys
from functools import partial

from lakehouse.catalog import LAYER_CHECKPOINTS, checkpoint_path
from lakehouse.jobs.crash import crash_point
from lakehouse.jobs.delta_io import BatchWrites, query_id
from lakehouse.jobs.progress import JobSteps
from lakehouse.jobs.streams import start_stream
from lakehouse.settings import Settings
from lakehouse.table_setup import ensure_table
from lakehouse.transforms.bronze import kafka_to_bronze

TABLE = "bronze.opensky_states"
# Where the test-only crash hook (lakehouse.jobs.crash.CRASH_ENV) can stop a batch.
CRASH_POINTS = ("before_write", "after_write")


# How long the broker may hold a consumer's fetch while it has fewer than fetch.min.bytes (1) new
# bytes to return. Kafka's default, 500 ms, is paid by each task of a micro-batch whose fetch
# reaches the end of its partition: reading 10,000 records from 3 partitions took 1.34 s of a
# `run all` trigger with it and 0.33 s with 20 ms (docs/scaling.md). A micro-batch reads only
# offsets that exist, so the wait never brings it more data.
FETCH_MAX_WAIT_MS = 20


def read_kafka(spark, settings: Settings):
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", settings.kafka.topic)
        .option("startingOffsets", settings.kafka.starting_offsets)
        .option("failOnDataLoss", str(settings.kafka.fail_on_data_loss).lower())
        .option("includeHeaders", "false")
        .option("kafka.fetch.max.wait.ms", FETCH_MAX_WAIT_MS)
    )
    if settings.kafka.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.kafka.max_offsets_per_trigger)
    return reader.load()


def write_bronze_batch(batch_df, batch_id: int, *, path: str, checkpoint: str, timings_log: str = "") -> None:
    """foreachBatch handler: append one Kafka micro-batch to bronze, once per batch id.

    The transaction app id is the bare query id, as Delta's streaming sink (which wrote bronze
    before) used: a checkpoint left mid-batch by that sink resumes without doubling the batch.
    """
    step = JobSteps(batch_df.sparkSession, "bronze", batch_id, timings_log)
    try:
        crash_point("bronze", batch_id, "before_write")
        step("write bronze")
        writes = BatchWrites(batch_df.sparkSession, checkpoint, batch_id)
        writes(batch_df, path, query_id(batch_df.sparkSession, checkpoint))
        crash_point("bronze", batch_id, "after_write")
    finally:
        step.done()


def start(spark, settings: Settings, once: bool = False) -> list:
    path = ensure_table(spark, settings, TABLE)
    checkpoint = checkpoint_path(settings, *LAYER_CHECKPOINTS["bronze"])
    handler = partial(write_bronze_batch, path=path, checkpoint=checkpoint, timings_log=settings.streaming.timings_log)
    return [start_stream(read_kafka(spark, settings).transform(kafka_to_bronze), handler, name="bronze",
                         checkpoint=checkpoint, every=settings.streaming.bronze_trigger, once=once)]


if __name__ == "__main__":
    from lakehouse.jobs.runner import submit_main

    sys.exit(submit_main("bronze", start))
