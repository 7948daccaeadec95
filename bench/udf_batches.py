"""Measure the scoring UDF against calling the same model directly on the same rows.

    python -m bench.udf_batches [--rows N] [--batch-sizes 1000,10000,50000] [--profile test]

Builds N simulated states (with previous state), trains a model into a temporary directory,
caches the rows in Spark, then times ``add_ml_scores`` + a ``noop`` write per Arrow batch size
and ``Model.score`` on the same pandas rows in the driver. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.udf_batches")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-sizes", default="1000,10000,50000")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    from lakehouse.settings import load_settings
    from lakehouse.spark import build_spark
    from ml.artefact import load_artefact, model_dir, save_artefact
    from ml.features import INPUT_COLUMNS
    from ml.labelled import simulated_run
    from ml.scoring import add_ml_scores
    from ml.training import fit_model, metadata_for

    root = tempfile.mkdtemp(prefix="ml-measure-")
    settings = load_settings(profile=args.profile).replace(storage={"root": root}, ml={"reload_interval_s": 0.0})
    aircraft = max(1, args.rows // 100)
    states, _ = simulated_run(settings, seed=1, aircraft=aircraft, snapshots=100, anomaly_rate=0.02)
    states = states[list(INPUT_COLUMNS)].head(args.rows).reset_index(drop=True)
    payload, stats = fit_model(states, settings)
    version = save_artefact(model_dir(settings), payload, metadata_for(payload, stats, settings, None, "measure"))
    model = load_artefact(model_dir(settings), version)

    spark = build_spark(settings, app_name="ml-measure-udf", register=False)
    # read from Parquet: a DataFrame made from pandas would ship its rows inside every task
    parquet = f"{root}/states.parquet"
    states.to_parquet(parquet, coerce_timestamps="us", allow_truncated_timestamps=False)
    df = spark.read.parquet(parquet).repartition(settings.spark.shuffle_partitions).cache()
    rows = df.count()
    result = {"rows": rows, "spark_master": settings.spark.master, "model": version, "udf": {}, "direct": None}
    for size in [int(s) for s in args.batch_sizes.split(",")]:
        cfg = settings.replace(ml={"arrow_batch_size": size})
        best = None
        for _ in range(args.repeat + 1):  # first run warms the Python workers
            started = time.perf_counter()
            df.transform(lambda d, c=cfg: add_ml_scores(d, c)).write.format("noop").mode("overwrite").save()
            elapsed = time.perf_counter() - started
            best = elapsed if best is None else min(best, elapsed)
        result["udf"][size] = {"seconds": round(best, 3), "rows_per_s": round(rows / best)}
    best = None
    for _ in range(args.repeat):
        started = time.perf_counter()
        model.score(states)
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    result["direct"] = {"seconds": round(best, 3), "rows_per_s": round(rows / best)}
    top = max(v["rows_per_s"] for v in result["udf"].values())
    result["best_udf_over_direct"] = round(top / result["direct"]["rows_per_s"], 3)
    plan = df.transform(lambda d: add_ml_scores(d, settings))._jdf.queryExecution().executedPlan().toString()
    result["python_udf_nodes_in_plan"] = plan.count("ArrowEvalPython")
    spark.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
