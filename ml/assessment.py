"""Detection quality on labelled data: what ``opensky-lakehouse evaluate`` runs
(``lakehouse.app.commands.evaluate`` says which data and what the report holds).

:func:`evaluate` trains (or loads) a model, scores the labelled test runs and the real tracks
with the model and the rules, and writes ``evaluation.json``, ``evaluation.md`` and
``histogram.png`` into its output directory.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

log = logging.getLogger("ml.evaluate")

DEFAULT_REPLAY = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quickstart_excerpt.jsonl.gz"



def evaluate(settings, out_dir: str, *, aircraft: int = 2000, train_aircraft: int = 100, snapshots: int = 120, seed: int | None = None,
             anomaly_rate: float = 0.05, train_anomaly_rate: float | None = None, replay=None,
             model_version: str | None = None, rules: bool = True, spark=None) -> dict:
    """Run the evaluation; write ``evaluation.json``, ``evaluation.md``, ``histogram.png``."""
    import numpy as np
    import pandas as pd

    from ingestion.simulator import ANOMALY_KINDS
    from ml.artefact import Model, load_artefact, model_dir
    from ml.evaluation import (
        detection_metrics,
        markdown_report,
        recording_glitches,
        rule_hits,
        rules_available,
        threshold_sweep,
        write_histogram,
    )
    from ml.features import STATE_COLUMNS
    from ml.labelled import attach_labels, replay_states, simulated_run, split_by_time
    from ml.training import fit_model

    started = time.monotonic()
    seed = settings.simulator.seed if seed is None else seed
    train_rate = settings.simulator.anomaly_rate if train_anomaly_rate is None else train_anomaly_rate
    train_sim, _ = simulated_run(settings, seed, train_aircraft, snapshots, train_rate)
    # The test run also injects the kinds no rule can see (ingestion.simulator.MODEL_KINDS);
    # training sees the simulator's default traffic.
    test_sim, labels = simulated_run(settings, seed + 1, aircraft, snapshots, anomaly_rate, ANOMALY_KINDS)
    test = attach_labels(test_sim, labels)
    replay = [DEFAULT_REPLAY] if replay is None else replay
    real = replay_states(settings, replay) if replay else test.iloc[:0]
    real_train, real_test = split_by_time(real, 0.5) if len(real) else (real, real)
    log.info("data: %d training states, %d test states (%d labelled), %d + %d real states",
             len(train_sim), len(test), int(test["kind"].notna().sum()), len(real_train), len(real_test))

    if model_version:
        model = load_artefact(model_dir(settings), model_version)
        train_frame = pd.concat([train_sim, real_train], ignore_index=True)
    else:
        states = pd.concat([train_sim[list(STATE_COLUMNS)], real_train[list(STATE_COLUMNS)]], ignore_index=True)
        payload, stats = fit_model(states, settings)
        model = Model("in-memory", payload["pipeline"], tuple(payload["features"]), payload["medians"],
                      payload["threshold"], {"trained_on": stats})
        train_frame = None
    threshold = settings.ml.score_threshold or model.threshold
    train_scores = model.score(train_frame) if train_frame is not None else None
    if train_scores is None:
        from ml.features import add_previous_state

        train_scores = model.score(add_previous_state(states))
    test_scores, real_scores = model.score(test), model.score(real_test)

    ml_flags, real_ml = test_scores > threshold, real_scores > threshold
    detectors = {"ml": detection_metrics(test, ml_flags), "rules": None, "both": None}
    glitches = recording_glitches(real_test)
    real_rate = {"ml": float(np.round(real_ml.mean(), 4)) if len(real_ml) else None}
    clean_rate = {"ml": float(np.round(real_ml[~glitches].mean(), 4)) if (~glitches).any() else None}
    rule_flags = real_rule_flags = None
    real_fired: dict[str, int] = {}
    if rules and rules_available():
        own_spark = spark is None
        if own_spark:
            from lakehouse.spark import build_spark

            spark = build_spark(settings, app_name="opensky-lakehouse-evaluate", register=False)
        try:
            hits = rule_hits(spark, test, settings)
            real_hits = rule_hits(spark, real_test, settings) if len(real_test) else []
        finally:
            if own_spark:
                spark.stop()
        rule_flags = np.array([bool(h) for h in hits], dtype=bool)
        real_rule_flags = np.array([bool(h) for h in real_hits], dtype=bool)
        real_fired = dict(Counter(name for h in real_hits for name in h))
        detectors["rules"] = detection_metrics(test, rule_flags)
        detectors["both"] = detection_metrics(test, ml_flags | rule_flags)
        real_rate["rules"] = float(np.round(real_rule_flags.mean(), 4)) if len(real_hits) else None
        real_rate["both"] = float(np.round((real_ml | real_rule_flags).mean(), 4)) if len(real_hits) else None
        if len(real_hits) and (~glitches).any():
            clean_rate["rules"] = float(np.round(real_rule_flags[~glitches].mean(), 4))
            clean_rate["both"] = float(np.round((real_ml | real_rule_flags)[~glitches].mean(), 4))
    elif rules:
        log.warning("lakehouse.transforms.rules is not available: evaluating the ML score only")

    os.makedirs(out_dir, exist_ok=True)
    report = {
        "model": {"version": model.version, "threshold": threshold, "contamination": settings.ml.contamination,
                  "tail_quantile": settings.ml.tail_quantile, "features": list(model.features)},
        "data": {"seed_train": seed, "seed_test": seed + 1, "aircraft": aircraft, "train_aircraft": train_aircraft, "snapshots": snapshots,
                 "anomaly_rate_test": anomaly_rate, "anomaly_rate_train": train_rate,
                 "train_states": int(len(train_scores)), "test_states": int(len(test)),
                 "labelled_states": int(test["kind"].notna().sum()),
                 "real_files": [str(p) for p in replay], "real_train_states": int(len(real_train)),
                 "real_test_states": int(len(real_test))},
        "detectors": detectors,
        "real_false_alarm_rate": real_rate,
        "real_false_alarm_rate_without_glitches": clean_rate,
        "real_glitches": {"states": int(glitches.sum()), "flagged_ml": int((real_ml & glitches).sum())},
        "real_rules_fired": real_fired,
        "sweep": threshold_sweep(train_scores, test, test_scores, real_scores, rule_flags, real_rule_flags),
        "seconds": round(time.monotonic() - started, 1),
    }
    with open(os.path.join(out_dir, "evaluation.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(out_dir, "evaluation.md"), "w") as fh:
        fh.write(markdown_report(report))
    write_histogram(os.path.join(out_dir, "histogram.png"), test, test_scores, real_scores, threshold)
    return report


