"""What Delta's per-file statistics cost a micro-batch's write: every column's vs the keys'.

``python -m bench.stats_columns [WORKDIR]``: appends the same 20,000 rows (one file, the schema
of ``silver.flights`` and of ``gold._state``) to three tables each: Delta's default statistics
(min/max/null count of the first 32 columns), statistics of the table's keys only (what
``lakehouse.table_setup.table_properties`` sets: ``delta.dataSkippingStatsColumns``), and none
(``delta.dataSkippingNumIndexedCols = 0``), with the session's codegen setting (``spark.codegen``)
and with codegen on. Median of 6 appends after 2 warm-ups, in seconds, printed. ``local[2]``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time

ROWS, RUNS, WARM_UP = 20_000, 8, 2
# A value of each column type of the two schemas; ids vary per row so min/max are real work.
VALUES = {"string": "format_string('%06x', id % 10000)", "timestamp": "timestamp_seconds(1800000000 + id)",
          "date": "DATE'2027-01-15'", "double": "rand()", "int": "CAST(id % 7 AS int)", "bigint": "id",
          "boolean": "id % 2 = 0", "array<int>": "array(CAST(id % 3 AS int))",
          "array<string>": "array('high_speed')"}


def main(work: str) -> None:
    from lakehouse.catalog import table
    from lakehouse.settings import load_settings
    from lakehouse.spark import build_spark
    from lakehouse.table_setup import table_properties

    settings = load_settings().replace(storage={"root": os.path.join(work, "lake")}, spark={"master": "local[2]"})
    spark = build_spark(settings, register=False)
    configured = {k: spark.conf.get(k) for k in ("spark.sql.codegen.wholeStage", "spark.sql.codegen.factoryMode")}
    for name in ("silver.flights", "gold._state"):
        spec = table(name)
        empty = spark.createDataFrame([], spec.schema)
        rows = spark.range(ROWS).selectExpr(*(f"CAST({VALUES[f.dataType.simpleString()]} AS "
                                               f"{f.dataType.simpleString()}) AS `{f.name}`"
                                               for f in empty.schema.fields))
        rows = rows.repartition(1).localCheckpoint(eager=True)
        variants = {
            "every column (Delta's default)": "",
            f"keys only ({table_properties(settings, name)['delta.dataSkippingStatsColumns']})":
                f"'delta.dataSkippingStatsColumns' = '{','.join(spec.keys)}'",
            "none": "'delta.dataSkippingNumIndexedCols' = '0'",
        }
        partitioned = f"PARTITIONED BY ({', '.join(spec.partition_by)})" if spec.partition_by else ""
        for codegen in ("as configured", "on"):
            for key, value in configured.items():
                spark.conf.set(key, value)
            if codegen == "on":
                spark.conf.set("spark.sql.codegen.wholeStage", "true")
                spark.conf.set("spark.sql.codegen.factoryMode", "FALLBACK")
            for i, (label, props) in enumerate(variants.items()):
                path = os.path.join(work, f"{spec.short_name}-{codegen.replace(' ', '_')}-{i}")
                shutil.rmtree(path, ignore_errors=True)
                spark.sql(f"CREATE TABLE delta.`{path}` ({spec.schema}) USING DELTA {partitioned} "
                          + (f"TBLPROPERTIES ({props})" if props else ""))
                seconds = []
                for _ in range(RUNS):
                    started = time.perf_counter()
                    rows.write.format("delta").mode("append").save(path)
                    seconds.append(time.perf_counter() - started)
                print(f"{name:15s} codegen {codegen:13s} statistics of {label:50s} "
                      f"{statistics.median(seconds[WARM_UP:]):.2f} s", flush=True)
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="stats-columns-"))
