"""The model inside the real gold job: real recorded tracks through bronze, silver and gold; a
model trained on silver scores the next gold batch; a newer model is picked up without restart,
but never in the middle of a batch replayed after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable

from ingestion.replay import read_replay
from ingestion.states import response_to_records
from lakehouse.catalog import checkpoint_path, table_path
from lakehouse.jobs import bronze, gold, silver
from lakehouse.jobs.crash import CRASH_ENV
from lakehouse.jobs.streams import await_queries
from ml.training import train
from tests.helpers import produce

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "quickstart_excerpt.jsonl.gz"


def _records(responses):
    for response in responses:
        for rec in response_to_records(response, "replay", 0):
            yield rec["icao24"], json.dumps(rec)


def _pipeline_once(spark, settings):
    for layer in (bronze, silver, gold):
        await_queries(layer.start(spark, settings, once=True))


def _live(settings):
    return DeltaTable(table_path(settings, "gold.live_flights")).to_pandas(
        columns=["icao24", "anomaly_score", "ml_anomaly", "model_version", "ml_reason"])


def _next_gold_batch(settings) -> int:
    commits = Path(checkpoint_path(settings, "gold", "gold"), "commits")
    return 1 + max(int(p.name) for p in commits.iterdir() if p.name.isdigit())


def test_gold_scores_with_the_newest_model_without_restart(spark, lake, monkeypatch):
    settings = lake.replace(ml={"reload_interval_s": 0})
    responses = list(read_replay([FIXTURE]))
    first, second, third, fourth = responses[:100], responses[100:140], responses[140:165], responses[165:]

    produce(settings, _records(first))
    _pipeline_once(spark, settings)
    live = _live(settings)
    assert len(live) > 0 and live["model_version"].isna().all()  # no model yet: rules only

    v1, _ = train(settings)
    produce(settings, _records(second))
    await_queries(bronze.start(spark, settings, once=True))
    await_queries(silver.start(spark, settings, once=True))
    await_queries(gold.start(spark, settings, once=True))
    live = _live(settings)
    assert set(live["model_version"]) == {v1}
    assert live["anomaly_score"].notna().all()
    assert (live["ml_reason"].notna() == live["ml_anomaly"]).all()  # a reason for each ML flag, only then

    v2, _ = train(settings)
    assert v2 != v1
    produce(settings, _records(third))
    await_queries(bronze.start(spark, settings, once=True))
    await_queries(silver.start(spark, settings, once=True))
    # The batch fails after its first write; a model published before the replay must not score
    # the rest of that batch: every table of one batch is scored by one model.
    batch = _next_gold_batch(settings)
    monkeypatch.setenv(CRASH_ENV, f"gold:{batch}:after_anomalies:raise")
    with pytest.raises(Exception, match="InjectedCrash"):
        await_queries(gold.start(spark, settings, once=True))
    monkeypatch.delenv(CRASH_ENV)
    v3, _ = train(settings)
    await_queries(gold.start(spark, settings, once=True))
    assert _next_gold_batch(settings) == batch + 1  # the replay was that batch alone
    versions = set(_live(settings)["model_version"])
    assert v2 in versions and v3 not in versions, versions  # (aircraft not in this batch keep v1)

    produce(settings, _records(fourth))  # the next batch takes the newest model
    _pipeline_once(spark, settings)
    assert v3 in set(_live(settings)["model_version"])
    anomalies = DeltaTable(table_path(settings, "gold.anomalies")).to_pandas(
        columns=["model_version", "ml_anomaly", "ml_reason"])
    assert set(anomalies["model_version"].dropna()) <= {v1, v2, v3}
    assert (anomalies["ml_reason"].notna() == anomalies["ml_anomaly"]).all()
