"""ML without Spark: the feature contract, training, artefact checks and the evaluation."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.artefact import ArtefactError, list_versions, load_artefact, model_dir
from ml.features import (
    CHECKS,
    FEATURES,
    INPUT_COLUMNS,
    PREV_COLUMNS,
    add_previous_state,
    build_features,
    feature_matrix,
)
from ml.labelled import attach_labels, simulated_run


@pytest.fixture
def ml_settings(base_settings, tmp_path):
    return base_settings.replace(storage={"root": str(tmp_path / "lake")},
                                 ml={"reload_interval_s": 0.0})


@pytest.fixture(scope="module")
def sim(base_settings):
    """A small labelled simulator run: (states with previous state, labels)."""
    return simulated_run(base_settings, seed=3, aircraft=120, snapshots=40, anomaly_rate=0.1)


def write_silver(settings, states: pd.DataFrame) -> None:
    from deltalake import write_deltalake

    from lakehouse.catalog import table_path
    from ml.features import STATE_COLUMNS

    write_deltalake(table_path(settings, "silver.flights"), states[list(STATE_COLUMNS)], mode="append")


def state(**values) -> dict:
    row = {"icao24": "abc123", "event_time": pd.Timestamp("2024-01-01T12:00:10Z"), "latitude": 48.0,
           "longitude": 2.0, "baro_altitude": 10000.0, "on_ground": False, "velocity": 230.0,
           "true_track": 90.0, "vertical_rate": 0.0, "prev_event_time": pd.Timestamp("2024-01-01T12:00:00Z"),
           "prev_latitude": 48.0, "prev_longitude": 2.0 - 2300.0 / (111_195.0 * np.cos(np.radians(48.0))),
           "prev_baro_altitude": 10000.0, "prev_velocity": 230.0, "geo_altitude": 10000.0,
           "prev_true_track": 90.0, "prev_on_ground": False}
    row.update(values)
    return row


def test_prev_columns_contract():
    assert PREV_COLUMNS == ("prev_event_time", "prev_latitude", "prev_longitude", "prev_baro_altitude",
                            "prev_velocity", "prev_true_track", "prev_on_ground")
    assert set(PREV_COLUMNS) <= set(INPUT_COLUMNS)


def test_features_of_a_steady_cruise_and_of_glitches():
    rows = pd.DataFrame([
        state(),
        state(baro_altitude=100.0),  # altitude drop: 9,900 m in 10 s at cruise speed
        state(velocity=690.0),  # speed spike
        state(prev_event_time=None, prev_latitude=None, prev_longitude=None, prev_baro_altitude=None,
              prev_velocity=None),
        state(prev_event_time=pd.Timestamp("2024-01-01T11:00:00Z")),  # previous state too old
    ])
    f = build_features(rows)
    assert list(f.columns) == list(FEATURES)
    cruise = f.iloc[0]
    assert cruise["implied_speed_log_ratio"] == pytest.approx(0.0, abs=0.01)
    assert cruise["altitude_rate"] == 0.0 and cruise["acceleration"] == 0.0
    assert cruise["course_deviation"] == pytest.approx(0.0, abs=0.5)
    assert cruise["track_sin"] == pytest.approx(1.0) and cruise["track_cos"] == pytest.approx(0.0, abs=1e-12)
    assert f.iloc[1]["altitude_rate"] == pytest.approx(-990.0)
    assert f.iloc[1]["vertical_rate_residual"] == pytest.approx(-990.0)
    assert f.iloc[2]["acceleration"] == pytest.approx(46.0)
    assert f.iloc[2]["implied_speed_log_ratio"] < -1.0
    assert f.iloc[2]["equivalent_airspeed"] > 2.5 * cruise["equivalent_airspeed"]
    for i in (3, 4):  # no usable previous state: NaN kinematics and the indicator, never zeros
        assert f.iloc[i]["has_prev"] == 0.0
        assert f.iloc[i][["implied_speed_log_ratio", "altitude_rate", "acceleration"]].isna().all()


def test_consistency_checks_are_zero_for_a_consistent_state_and_name_each_inconsistency():
    rows = pd.DataFrame([
        state(),
        state(velocity=100.0, prev_velocity=100.0),  # flew 2,300 m in 10 s reporting 100 m/s
        state(baro_altitude=10300.0),  # a level step of 300 m, vertical rate flat
        state(geo_altitude=11200.0),  # GNSS 1,200 m above the barometric altitude
        state(true_track=200.0, prev_true_track=200.0),  # tracks 110 degrees off the course flown
        state(velocity=120.0),  # 230 -> 120 m/s in 10 s
        state(true_track=120.0, prev_true_track=60.0),  # a steady turn: the course flown is the mean
        state(velocity=80.0, prev_on_ground=True),  # took off between the reports: not an acceleration
    ])
    checks = build_features(rows)[list(CHECKS)]
    assert (checks.iloc[0] < 0.05).all(), checks.iloc[0]
    assert checks.iloc[6]["track_vs_course"] < 0.05 and checks.iloc[7][["speed_change", "speed_excess"]].isna().all()
    strongest = [checks.iloc[i].idxmax() for i in range(1, 6)]
    assert strongest == ["speed_excess", "altitude_vs_vertical_rate", "geo_vs_baro", "track_vs_course",
                         "speed_change"]


def test_an_ml_flag_says_in_words_which_checks_drove_it(ml_settings):
    from ml.artefact import Model
    from ml.features import CHECK_REASONS, STATE_COLUMNS
    from ml.training import fit_model

    traffic, _ = simulated_run(ml_settings, seed=4, aircraft=120, snapshots=40, anomaly_rate=0.0)
    payload, _ = fit_model(traffic[list(STATE_COLUMNS)], ml_settings)
    model = Model("test", payload["pipeline"], tuple(payload["features"]), payload["medians"], payload["threshold"], {})
    rows = pd.DataFrame([state(), state(geo_altitude=11500.0),
                         state(geo_altitude=11500.0, true_track=200.0, prev_true_track=200.0)])
    scores, reasons = model.score_and_explain(rows, model.threshold)
    np.testing.assert_array_equal(scores, model.score(rows))
    assert reasons[0] is None and scores[0] <= model.threshold
    assert reasons[1] == CHECK_REASONS["geo_vs_baro"]
    assert set(reasons[2].split("; ")) == {CHECK_REASONS["geo_vs_baro"], CHECK_REASONS["track_vs_course"]}


def test_missing_values_are_imputed_by_group_medians_not_zero():
    train = pd.DataFrame([state(), state(baro_altitude=11000.0, prev_baro_altitude=11000.0),
                          state(on_ground=True, baro_altitude=120.0, prev_baro_altitude=120.0, velocity=8.0),
                          state(on_ground=True, baro_altitude=80.0, prev_baro_altitude=80.0, velocity=6.0)])
    from ml.features import imputation_medians

    medians = imputation_medians(build_features(train))
    unknown = pd.DataFrame([state(baro_altitude=None), state(on_ground=True, baro_altitude=None, velocity=7.0)])
    matrix = feature_matrix(unknown, medians)
    alt = FEATURES.index("baro_altitude")
    assert matrix[0, alt] == pytest.approx(10500.0)  # airborne median
    assert matrix[1, alt] == pytest.approx(100.0)  # on-ground median
    assert matrix[:, FEATURES.index("altitude_missing")].tolist() == [1.0, 1.0]


def test_the_scoring_matrix_is_the_training_features_imputed(sim):
    """feature_matrix (arrays, what the UDF calls per Arrow batch) = the frame training builds
    with each NaN filled by its group's median (pandas' fillna here), bit for bit: nulls,
    infinities, unknown on_ground, both groups."""
    from ml.features import imputation_medians, impute

    def reference(rows):
        frame = build_features(rows)
        ground = (frame["on_ground"] == 1.0).to_numpy()
        for group, mask in (("airborne", ~ground), ("ground", ground)):
            if mask.any():
                frame.loc[mask] = frame.loc[mask].fillna(value=medians[group])
        return frame.to_numpy(dtype=np.float64)

    states = sim[0]
    medians = imputation_medians(build_features(states))
    odd = pd.DataFrame([state(velocity=float("inf")), state(on_ground=None, prev_on_ground=None),
                        state(event_time=pd.Timestamp("2024-01-01T12:00:00.000001"), prev_event_time=None),
                        state(on_ground=True, baro_altitude=None, geo_altitude=None, velocity=None)])
    for rows in (states, odd, odd.astype({"on_ground": object, "prev_on_ground": object})):
        expected = reference(rows)
        got = feature_matrix(rows, medians)
        assert got.shape == (len(rows), len(FEATURES))
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(impute(build_features(rows), medians), expected)


def test_feature_input_without_previous_state_is_refused():
    with pytest.raises(ValueError, match="prev_baro_altitude"):
        build_features(pd.DataFrame([state()]).drop(columns=["prev_baro_altitude"]))


def test_add_previous_state_orders_per_aircraft():
    t = pd.to_datetime([20, 10, 15], unit="s", utc=True)
    df = pd.DataFrame({"icao24": ["a", "a", "b"], "event_time": t, "latitude": [2.0, 1.0, 5.0],
                       "longitude": [0.0] * 3, "baro_altitude": [200.0, 100.0, 50.0], "velocity": [1.0, 2.0, 3.0],
                       "true_track": [10.0, 20.0, 30.0], "on_ground": [False, True, False]})
    out = add_previous_state(df)
    assert out["icao24"].tolist() == ["a", "a", "b"]
    assert out["prev_latitude"].tolist()[1] == 1.0
    assert out["prev_baro_altitude"].isna().tolist() == [True, False, True]
    assert out["prev_true_track"].tolist()[1] == 20.0 and out["prev_on_ground"].tolist()[1] == True  # noqa: E712


def test_train_cli_publishes_a_versioned_artefact_with_lineage(ml_settings, sim):
    from tests.helpers import run_cli

    states, _ = sim
    write_silver(ml_settings, states.iloc[: len(states) // 2])
    write_silver(ml_settings, states.iloc[len(states) // 2:])
    first = run_cli(ml_settings, "train", "--delta-version", "0")
    assert json.loads(first.stdout)["version"] == "v0001"
    run_cli(ml_settings, "train")
    directory = model_dir(ml_settings)
    assert list_versions(directory) == ["v0001", "v0002"]
    meta1 = json.load(open(os.path.join(directory, "v0001", "metadata.json")))
    meta2 = json.load(open(os.path.join(directory, "v0002", "metadata.json")))
    assert meta1["trained_on"]["delta_version"] == 0 and meta1["trained_on"]["rows"] == len(states) // 2
    assert meta2["trained_on"]["delta_version"] == 1 and meta2["trained_on"]["rows"] == len(states)
    assert meta2["features"] == list(FEATURES)
    assert meta2["parameters"]["model"] == "TailModel" and meta2["parameters"]["checks"] == list(CHECKS)
    assert len(meta2["parameters"]["check_scales"]) == len(CHECKS) and meta2["score_threshold"] > 0
    assert {"scikit-learn", "numpy", "pandas", "python"} <= set(meta2["libraries"])
    assert meta2["created_at"] and len(meta2["sha256"]) == 64
    model = load_artefact(directory)
    assert model.version == "v0002"
    scores = model.score(states)
    assert scores.shape == (len(states),) and np.all(scores >= 0)
    # the threshold is the training quantile at 1 - contamination (scored here on its training states)
    contamination = ml_settings.ml.contamination
    assert (scores > model.threshold).sum() == pytest.approx(contamination * len(states), abs=2)


def test_train_without_silver_says_so(ml_settings):
    from tests.helpers import run_cli

    result = run_cli(ml_settings, "train", check=False)
    assert result.returncode == 1 and "silver.flights does not exist" in result.stderr


@pytest.fixture
def published(ml_settings, sim):
    from ml.artefact import save_artefact
    from ml.training import fit_model, metadata_for

    payload, stats = fit_model(sim[0], ml_settings)
    directory = model_dir(ml_settings)
    version = save_artefact(directory, payload, metadata_for(payload, stats, ml_settings, 0, "test"))
    return directory, version


def test_tampered_artefact_is_refused(published):
    directory, version = published
    path = os.path.join(directory, version, "model.pkl")
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    with pytest.raises(ArtefactError, match=r"v0001: checksum mismatch .* refusing to load it"):
        load_artefact(directory)


def test_artefact_of_other_features_is_refused(published):
    directory, version = published
    meta_path = os.path.join(directory, version, "metadata.json")
    meta = json.load(open(meta_path))
    meta["features"] = [f for f in meta["features"] if f != "acceleration"] + ["turn_rate"]
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(ArtefactError, match=r"feature list does not match .*'acceleration'.*'turn_rate'"):
        load_artefact(directory)


def test_artefact_whose_pickle_has_other_features_is_refused(published):
    from ml.artefact import save_artefact

    directory, version = published
    payload = pickle.loads(open(os.path.join(directory, version, "model.pkl"), "rb").read())
    payload["features"] = list(reversed(payload["features"]))
    meta = json.load(open(os.path.join(directory, version, "metadata.json")))
    new = save_artefact(directory, payload, {k: v for k, v in meta.items() if k != "sha256"})
    with pytest.raises(ArtefactError, match="same names, different order"):
        load_artefact(directory, new)


def test_a_scoring_worker_loads_and_scores_an_artefact_without_scikit_learn(published, sim):
    """What each pandas-UDF worker does (ml.scoring): unpickle the artefact and score a batch, in a
    fresh interpreter; neither scikit-learn nor SciPy is imported for it."""
    import subprocess
    import sys

    directory, _ = published
    frame = sim[0].head(200)
    path = os.path.join(directory, "batch.pkl")
    frame.to_pickle(path)
    code = (
        "import sys, pandas as pd\n"
        "from ml.artefact import load_artefact\n"
        f"model = load_artefact({directory!r})\n"
        f"scores, reasons = model.score_and_explain(pd.read_pickle({path!r}), model.threshold)\n"
        "print(len(scores), sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["200", "[]"]


def test_an_artefact_pickled_with_scikit_learns_estimator_state_still_loads(published, sim):
    """Artefacts written while TailModel derived from scikit-learn's BaseEstimator carry its
    ``_sklearn_version`` attribute in their state: they load and score the same."""
    from ml.artefact import save_artefact

    directory, version = published
    payload = pickle.loads(open(os.path.join(directory, version, "model.pkl"), "rb").read())
    payload["pipeline"].__dict__["_sklearn_version"] = "1.7.2"
    meta = json.load(open(os.path.join(directory, version, "metadata.json")))
    old = save_artefact(directory, payload, {k: v for k, v in meta.items() if k != "sha256"})
    frame = sim[0].head(200)
    assert np.array_equal(load_artefact(directory, old).score(frame), load_artefact(directory, version).score(frame))


def test_train_on_recorded_tracks_publishes_a_model_without_silver(ml_settings):
    """How the demo has a model before silver holds anything: ``train --replay FILE``."""
    from tests.helpers import run_cli

    fixture = Path(__file__).parent / "fixtures" / "quickstart_excerpt.jsonl.gz"
    out = json.loads(run_cli(ml_settings, "train", "--replay", str(fixture)).stdout)
    assert out["version"] == "v0001" and out["trained_on"]["table"] == "replay"
    assert out["trained_on"]["rows"] > 4000 and out["trained_on"]["files"] == [str(fixture)]
    assert load_artefact(model_dir(ml_settings)).version == "v0001"


def test_unknown_version_is_named(published):
    directory, _ = published
    with pytest.raises(ArtefactError, match=r"'v0009' not found .*\(published: v0001\)"):
        load_artefact(directory, "v0009")


def test_evaluation_meets_the_detection_targets_on_a_smaller_labelled_run(ml_settings, tmp_path, spark):
    """The model finds the kinds no rule can see, keeps quiet on real tracks, and with the rules
    catches nearly every injected state (issue 15's targets, default settings, a run of 72,000
    simulated states instead of 240,000)."""
    from ml.assessment import evaluate

    out = tmp_path / "eval"
    report = evaluate(ml_settings, str(out), aircraft=600, snapshots=120, seed=5, anomaly_rate=0.1, spark=spark)
    for name in ("evaluation.json", "evaluation.md", "histogram.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "evaluation.json").read_text())["data"] == report["data"]
    ml, rules, both = (report["detectors"][d] for d in ("ml", "rules", "both"))
    assert report["data"]["labelled_states"] == ml["all"]["states"] > 0
    invisible = ml["rule_invisible"]
    assert invisible["states"] >= 50 and invisible["recall"] >= 0.80, invisible
    assert rules["rule_invisible"]["detected"] == 0  # they are invisible to the rules indeed
    assert report["real_false_alarm_rate_without_glitches"]["ml"] <= 0.005
    assert report["real_glitches"]["flagged_ml"] == report["real_glitches"]["states"]  # real glitches are found
    assert both["all"]["f1"] >= 0.95, both["all"]
    assert ml["per_kind"]["emergency_squawk"]["recall"] < 0.2  # a squawk code is the rules' job
    md = (out / "evaluation.md").read_text()
    assert "| ml | all rule-invisible |" in md and "slow_cruise (no rule)" in md


def test_metrics_count_after_anomaly_states_apart():
    from ml.evaluation import detection_metrics

    states = pd.DataFrame({"icao24": ["a"] * 4, "time_position": [0, 10, 20, 30]})
    labels = pd.DataFrame({"icao24": ["a"], "time_position": [10], "kind": ["speed_spike"]})
    labelled = attach_labels(states, labels)
    assert labelled["after_anomaly"].tolist() == [False, False, True, False]
    m = detection_metrics(labelled, np.array([True, True, True, False]))
    assert m["all"] == {"states": 1, "detected": 1, "false_alarms": 1, "precision": 0.5, "recall": 1.0,
                        "f1": 0.6667}
    assert (m["after_anomaly_states"], m["after_anomaly_flagged"], m["normal_states"]) == (1, 1, 2)


def test_model_dir_on_an_object_store_root_is_a_local_directory_named_after_it(ml_settings):
    # Gold asks for the model directory every batch: on s3a:// the default must not stop it.
    s3 = ml_settings.replace(storage={"root": "s3a://flights/lake"})
    path = model_dir(s3)
    assert "://" not in path and os.path.isabs(path)
    assert path.endswith(os.path.join("data", "models", "s3a_flights_lake", "_models"))
    absolute = s3.replace(ml={"model_dir": "/srv/models"})
    assert model_dir(absolute) == "/srv/models"
    with pytest.raises(ArtefactError, match="local"):
        model_dir(s3.replace(ml={"model_dir": "s3a://flights/models"}))
