"""Bronze job: Kafka topic -> ``bronze.opensky_states``, exactly once.

Run: ``opensky-lakehouse run bronze [--once]`` or
``spark-submit $(opensky-lakehouse spark-conf) lakehouse/jobs/bronze.py [--once]``.
A new checkpoint starts at ``kafka.starting_offsets`` (earliest by default). The Delta sink
commits each micro-batch with the query id and batch id as its transaction, so a batch replayed
after a crash is skipped: records land exactly once.
"""

from __future__ import annotations

import sys

from lakehouse.catalog import checkpoint_path
from lakehouse.jobs.common import trigger
from lakehouse.settings import Settings
from lakehouse.tables import ensure_table
from lakehouse.transforms.bronze import kafka_to_bronze

TABLE = "bronze.opensky_states"


def read_kafka(spark, settings: Settings):
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", settings.kafka.topic)
        .option("startingOffsets", settings.kafka.starting_offsets)
        .option("failOnDataLoss", str(settings.kafka.fail_on_data_loss).lower())
        .option("includeHeaders", "false")
    )
    if settings.kafka.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.kafka.max_offsets_per_trigger)
    return reader.load()


def start(spark, settings: Settings, once: bool = False) -> list:
    path = ensure_table(spark, settings, TABLE)
    query = (
        read_kafka(spark, settings)
        .transform(kafka_to_bronze)
        .writeStream.format("delta")
        .queryName("bronze")
        .outputMode("append")
        .option("checkpointLocation", checkpoint_path(settings, "bronze", "opensky_states"))
        .trigger(**trigger(settings.streaming.bronze_trigger, once))
        .start(path)
    )
    return [query]


if __name__ == "__main__":
    from lakehouse.jobs.common import submit_main

    sys.exit(submit_main("bronze"))
