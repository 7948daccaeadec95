"""Silver's duplicate look-up on a full watermark of silver: the rows since the horizon vs the
batch's event-time span.

``python -m bench.dedup_lookup [WORKDIR]``: builds a silver-like Delta table of 60 batch files,
10,000 rows each, one per 10 s of event time (10 minutes, the default ``silver.dedup_watermark``,
at 1,000 states/s), then times the left-anti join of a 10,000-row batch in the newest 10 s
against the silver keys filtered two ways: since the horizon (every row of the watermark) and
within the batch's own event-time span (what ``lakehouse.jobs.silver`` reads). Median of 5 runs
after 2 warm-ups, in seconds, printed. ``local[2]``; the table is kept in WORKDIR for reruns.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

T0 = 1_800_000_000
FILES, ROWS = 60, 10_000


def main(work: str) -> None:
    from pyspark.sql import functions as F

    from lakehouse.settings import load_settings
    from lakehouse.spark import build_spark

    settings = load_settings().replace(storage={"root": os.path.join(work, "lake")}, spark={"master": "local[2]"})
    spark = build_spark(settings, register=False)
    path = os.path.join(work, "flights")
    if not os.path.exists(path):
        for i in range(FILES):
            (spark.range(ROWS).selectExpr("format_string('%06x', id) AS icao24",
                                          f"timestamp_seconds({T0} + {i} * 10 + id % 10) AS event_time")
             .withColumn("event_date", F.to_date("event_time"))
             .write.format("delta").mode("append").partitionBy("event_date").save(path))
    newest = T0 + FILES * 10
    batch = (spark.range(ROWS).selectExpr("format_string('%06x', id) AS icao24",
                                          f"timestamp_seconds({newest} + id % 10) AS event_time")).persist()
    batch.count()
    horizon, lo, hi = (F.timestamp_seconds(F.lit(t)) for t in (T0 - 5, newest, newest + 9))
    filters = {
        "since the horizon": (F.col("event_date") >= F.to_date(horizon)) & (F.col("event_time") >= horizon),
        "the batch's span": F.col("event_date").between(F.to_date(lo), F.to_date(hi))
        & F.col("event_time").between(lo, hi),
    }
    for label, condition in filters.items():
        times = []
        for _ in range(7):
            known = spark.read.format("delta").load(path).where(condition).select("icao24", "event_time")
            started = time.perf_counter()
            batch.join(known, ["icao24", "event_time"], "left_anti").count()
            times.append(time.perf_counter() - started)
        print(f"dedup look-up, silver keys {label}: median {statistics.median(times[2:]):.3f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/bench/dedup_lookup")
