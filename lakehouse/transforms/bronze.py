"""Bronze: raw Kafka records with their coordinates. Nothing is parsed, trimmed or dropped."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse.catalog import table

BRONZE = table("bronze.opensky_states")


def kafka_to_bronze(kafka_df: DataFrame) -> DataFrame:
    """Spark Kafka source rows -> ``bronze.opensky_states`` columns.

    Key and value stay the bytes Kafka delivered (binary, never decoded here: any bytes at all
    keep the table readable; silver decodes); ``ingested_at`` is the micro-batch time, so
    ``ingest_date`` partitions by arrival.
    """
    return (
        kafka_df.withColumn("ingested_at", F.current_timestamp())
        .select(
            F.col("key"),
            F.col("value"),
            F.col("topic"),
            F.col("partition"),
            F.col("offset"),
            F.col("timestamp").alias("kafka_timestamp"),
            F.col("ingested_at"),
            F.to_date("ingested_at").alias("ingest_date"),
        )
        .select(*BRONZE.columns)
    )
