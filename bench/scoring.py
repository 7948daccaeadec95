"""Scoring: the pandas UDF of ``ml.scoring.add_ml_scores`` against the same model called directly.

Input: the first ``scoring_rows`` states (by
event time) of the last throughput run's ``silver.flights``, with each aircraft's previous
state added by ``ml.features.add_previous_state`` (the model's input contract). The model: the
suite's one model (:func:`ensure_model`: ``opensky-lakehouse train``, a subprocess as a user
trains it, on the first silver table of the throughput section).

Each path scores the same rows (the model's input columns), ``sizes.runs`` times:

- **direct**: ``Model.score(frame)`` on the pandas frame in this process (features + the
  model; loading the artefact excluded) and the threshold comparison;
- **UDF**: ``add_ml_scores(df, settings)`` on a cached Spark DataFrame of the same rows, forced
  with the ``noop`` sink: Arrow transfer to the Python workers, the same ``Model.score``, and
  back. Building and caching the DataFrame is excluded;
- **Arrow round trip alone**: a pandas UDF over the same input columns that returns zeros,
  forced the same way: what any pandas UDF costs here before the model does any work (the
  floor under the UDF path's ratio).

Reported: rows/s of each and the UDF's (and the round trip's) ratio to the direct call of the
same run.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pandas as pd

from bench.figures import figure, rate, ratio

log = logging.getLogger("bench")


def input_frame(settings, rows: int):
    """The first ``rows`` silver states by event time, with their previous states (pandas)."""
    from deltalake import DeltaTable

    from lakehouse.catalog import table_path
    from lakehouse.delta_rs import delta_uri, storage_options
    from ml import features
    dt = DeltaTable(delta_uri(table_path(settings, "silver.flights")), storage_options=storage_options(settings))
    frame = dt.to_pandas(columns=list(features.STATE_COLUMNS))
    frame = frame.sort_values("event_time", kind="mergesort").head(rows)
    return features.add_previous_state(frame)[list(features.INPUT_COLUMNS)]


def train(env, settings) -> str:
    from bench.env import REPO

    result = subprocess.run([sys.executable, "-m", "lakehouse", "train"], cwd=REPO, env=env.cli_env(settings),
                            capture_output=True, text=True, timeout=3600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"train exited {result.returncode}: {result.stderr[-2000:]}")
    return result.stdout


def ensure_model(env, settings) -> str | None:
    """The suite's model version: trained now on ``settings``' silver.flights if there is none yet.

    None while ``ml`` is not on this checkout (gold then runs on its rules only).
    """
    from ml import artefact
    directory = artefact.model_dir(settings)
    version = artefact.latest_version(directory)
    if version is None:
        log.info("bench: training the suite's model on %s (opensky-lakehouse train; not timed)",
                 settings.storage.root)
        t0 = time.perf_counter()
        train(env, settings)
        version = artefact.latest_version(directory)
        log.info("bench: model %s trained in %.0f s", version, time.perf_counter() - t0)
    return version


def identity_udf(df, settings):
    """``df`` through a pandas UDF over the model's input columns that returns zeros, with the
    scoring step's Arrow batch size: the Arrow round trip without the model."""
    import numpy as np
    from pyspark.sql.functions import pandas_udf

    from ml import features, scoring

    @pandas_udf("double")  # its annotations resolve in this module's globals: Iterator, pd
    def zeros(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        for columns in batches:
            yield pd.Series(np.zeros(len(columns[0])))

    df.sparkSession.conf.set(scoring.ARROW_BATCH_CONF, str(settings.ml.arrow_batch_size))
    return df.withColumn("_zero", zeros(*features.INPUT_COLUMNS))


def run_section(env, sizes, spark, settings) -> dict:
    if spark is None or settings is None:
        return {"status": "pending", "reason": "needs the throughput section's silver.flights"}
    from ml import artefact, scoring

    ensure_model(env, settings)
    model = artefact.load_artefact(artefact.model_dir(settings))
    threshold = getattr(settings.ml, "score_threshold", 0) or model.threshold  # as add_ml_scores decides
    frame = input_frame(settings, sizes.scoring_rows)
    n = len(frame)
    df = spark.createDataFrame(frame).cache()
    df.count()
    floor = identity_udf(df, settings)
    direct, udf, trip = [], [], []
    for i in range(sizes.runs):
        t0 = time.perf_counter()
        scores = model.score(frame)
        flags = scores > threshold
        direct.append(rate(n, time.perf_counter() - t0))
        t0 = time.perf_counter()
        scoring.add_ml_scores(df, settings).write.format("noop").mode("overwrite").save()
        udf.append(rate(n, time.perf_counter() - t0))
        t0 = time.perf_counter()
        floor.write.format("noop").mode("overwrite").save()
        trip.append(rate(n, time.perf_counter() - t0))
        log.info("bench: [scoring %d/%d] %s rows: direct %s rows/s, pandas UDF %s rows/s (%d flagged), "
                 "Arrow round trip alone %s rows/s", i + 1, sizes.runs, f"{n:,}", f"{direct[-1]:,.0f}",
                 f"{udf[-1]:,.0f}", int(flags.sum()), f"{trip[-1]:,.0f}")
    df.unpersist()
    return {
        "status": "ok", "unit": "rows/s", "rows": n, "runs": sizes.runs, "model_version": model.version,
        "arrow_batch_size": settings.ml.arrow_batch_size, "measured": __doc__.split("\n\n")[2].replace("\n", " "),
        "metrics": {"direct_rows_per_s": figure(direct), "udf_rows_per_s": figure(udf),
                    "udf_to_direct": ratio(udf, direct), "round_trip_rows_per_s": figure(trip),
                    "round_trip_to_direct": ratio(trip, direct)},
    }
