"""The scoring step in real Spark: parity with training, no model, a stream, a model swap."""

from __future__ import annotations

import contextlib
import functools
import logging

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from lakehouse.spark import merged_partitions
from ml.artefact import load_artefact, model_dir, save_artefact
from ml.features import INPUT_COLUMNS
from ml.labelled import simulated_run
from ml.scoring import add_ml_scores
from ml.training import fit_model, metadata_for

pytestmark = pytest.mark.integration

COLUMNS = [*INPUT_COLUMNS, "squawk", "callsign"]


@pytest.fixture
def ml_settings(base_settings, tmp_path):
    return base_settings.replace(storage={"root": str(tmp_path / "lake")},
                                 ml={"reload_interval_s": 0.0, "arrow_batch_size": 500})


@pytest.fixture(scope="module")
def states(base_settings):
    frame, _ = simulated_run(base_settings, seed=11, aircraft=80, snapshots=30, anomaly_rate=0.1)
    return frame[COLUMNS].reset_index(drop=True)


def publish(settings, states: pd.DataFrame, random_state: int = 7) -> str:
    settings = settings.replace(ml={"random_state": random_state})
    payload, stats = fit_model(states, settings)
    return save_artefact(model_dir(settings), payload, metadata_for(payload, stats, settings, None, "test"))


def to_spark(spark, frame: pd.DataFrame):
    return spark.createDataFrame(frame)


def test_spark_scores_equal_the_training_path(spark, ml_settings, states):
    version = publish(ml_settings, states)
    scored = to_spark(spark, states).transform(lambda d: add_ml_scores(d, ml_settings))
    assert scored.columns == [*COLUMNS, "anomaly_score", "ml_anomaly", "model_version", "ml_reason"]
    assert dict(scored.dtypes)["anomaly_score"] == "double" and dict(scored.dtypes)["ml_anomaly"] == "boolean"
    got = scored.toPandas()
    got["event_time"] = got["event_time"].dt.tz_localize("UTC")  # Spark hands back naive UTC
    model = load_artefact(model_dir(ml_settings), version)
    expected, reasons = model.score_and_explain(states, model.threshold)
    np.testing.assert_array_equal(expected, model.score(states))
    merged = states.assign(expected=expected, reason=reasons).merge(got[["icao24", "event_time", "anomaly_score",
                                                                        "ml_anomaly", "model_version", "ml_reason"]],
                                                     on=["icao24", "event_time"], validate="one_to_one")
    assert len(merged) == len(states)
    np.testing.assert_allclose(merged["anomaly_score"], merged["expected"], rtol=0, atol=1e-12)
    assert (merged["ml_anomaly"] == (merged["expected"] > model.threshold)).all()
    assert set(merged["model_version"]) == {"v0001"}
    assert merged["ml_reason"].fillna("").tolist() == merged["reason"].fillna("").tolist()
    assert (merged["ml_reason"].notna() == merged["ml_anomaly"]).all() and merged["ml_anomaly"].any()
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "500"


def test_without_a_model_the_rules_run_alone(spark, ml_settings, states, caplog):
    caplog.set_level(logging.WARNING, logger="ml.scoring")
    scored = to_spark(spark, states.head(20)).transform(lambda d: add_ml_scores(d, ml_settings)).toPandas()
    assert scored["anomaly_score"].isna().all()
    assert not scored["ml_anomaly"].any()
    assert scored["model_version"].isna().all() and scored["ml_reason"].isna().all()
    assert "runs on the rules only" in caplog.text


def test_missing_previous_state_columns_are_named(spark, ml_settings, states):
    with pytest.raises(ValueError, match="prev_baro_altitude"):
        add_ml_scores(to_spark(spark, states.head(5).drop(columns=["prev_baro_altitude"])), ml_settings)


def score_batch(batch_df, batch_id: int, settings, out_path: str) -> None:
    """foreachBatch handler of the test stream: score, append idempotently (txnVersion)."""
    (batch_df.transform(lambda d: add_ml_scores(d, settings))
     .write.format("delta").mode("append")
     .option("txnAppId", "ml-test").option("txnVersion", batch_id)
     .save(out_path))


def test_stream_scores_and_swaps_the_model_without_restart(spark, ml_settings, states, tmp_path):
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    times = sorted(states["event_time"].unique())
    first = states[states["event_time"] <= times[len(times) // 2]]
    second = states[states["event_time"] > times[len(times) // 2]]
    to_spark(spark, first).write.format("delta").save(src)
    assert publish(ml_settings, states) == "v0001"

    query = (spark.readStream.format("delta").load(src)
             .writeStream.foreachBatch(functools.partial(score_batch, settings=ml_settings, out_path=out))
             .option("checkpointLocation", str(tmp_path / "chk"))
             .trigger(processingTime="1 second").queryName("ml_swap_test").start())
    try:
        query.processAllAvailable()
        # a newer model is published while the stream runs; the next batch must use it
        assert publish(ml_settings, states, random_state=8) == "v0002"
        to_spark(spark, second).write.format("delta").mode("append").save(src)
        query.processAllAvailable()
    finally:
        query.stop()
    scored = spark.read.format("delta").load(out).toPandas()
    assert len(scored) == len(states)
    by_time = scored.assign(late=scored["event_time"] > pd.Timestamp(times[len(times) // 2]).tz_localize(None))
    assert set(by_time.loc[~by_time["late"], "model_version"]) == {"v0001"}
    assert set(by_time.loc[by_time["late"], "model_version"]) == {"v0002"}
    assert scored["anomaly_score"].notna().all()
    v2 = load_artefact(model_dir(ml_settings), "v0002")
    late = states[states["event_time"] > times[len(times) // 2]]
    merged = late.assign(expected=v2.score(late)).merge(
        scored.assign(event_time=scored["event_time"].dt.tz_localize("UTC")), on=["icao24", "event_time"])
    np.testing.assert_allclose(merged["anomaly_score"], merged["expected"], atol=1e-12)


def test_a_pinned_version_is_kept(spark, ml_settings, states):
    publish(ml_settings, states)
    publish(ml_settings, states, random_state=8)
    pinned = ml_settings.replace(ml={"model_version": "v0001"})
    got = to_spark(spark, states.head(10)).transform(lambda d: add_ml_scores(d, pinned)).toPandas()
    assert set(got["model_version"]) == {"v0001"}
    from ml.artefact import ArtefactError

    with pytest.raises(ArtefactError, match="v0007"):
        add_ml_scores(to_spark(spark, states.head(3)), ml_settings.replace(ml={"model_version": "v0007"}))


def test_a_small_batch_is_scored_in_one_task(spark, ml_settings, states):
    """gold persists its scored states inside merged_partitions: after the shuffle by aircraft a
    small batch is one partition, so one Python worker scores it (each concurrent task has its
    own, ~150-200 MB of pandas, pyarrow and scikit-learn); outside it the cached plan keeps a
    partition per shuffle partition. The session's settings are put back after."""
    publish(ml_settings, states)
    keys = ("spark.sql.adaptive.coalescePartitions.parallelismFirst",
            "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning")
    before = [spark.conf.get(k, None) for k in keys]

    def scored_partitions(merged: bool) -> tuple[int, int]:
        shuffled = to_spark(spark, states).repartition("icao24")  # as the window by aircraft
        with merged_partitions(spark) if merged else contextlib.nullcontext():
            scored = shuffled.transform(lambda d: add_ml_scores(d, ml_settings)).persist()
            n = scored.count()
        try:  # read from the cache: its partitions are the ones the scoring ran in
            return n, scored.select(F.spark_partition_id()).distinct().count()
        finally:
            scored.unpersist(blocking=True)

    assert scored_partitions(merged=True) == (len(states), 1)
    assert [spark.conf.get(k, None) for k in keys] == before
    n, partitions = scored_partitions(merged=False)
    assert n == len(states) and partitions > 1
