"""Measure detection quality on labelled data and write JSON, markdown and a PNG histogram.

    opensky-lakehouse evaluate [--aircraft N] [--snapshots N] [--seed S] [--anomaly-rate R]
                               [--replay FILE ...] [--model vNNNN] [--no-rules] [--out DIR]

Data: two simulator runs (``ingestion.simulator``; different seeds) and real recorded tracks
(replay files, default the traffic-sample fixture), split in time. Unless ``--model`` names a
published artefact, a model is trained exactly as ``train`` does (same settings, same code) on
the first run plus the first half of the real tracks, and tested on the second run (labelled
injected anomalies, including the kinds no rule can see) and the second half of the real tracks (assumed clean). Reports ML alone,
the gold rules alone and both, per anomaly kind; the false-alarm rate on the real tracks; a
threshold sweep; and a score histogram.
"""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger("ml.evaluate")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--aircraft", type=int, default=2000, help="simulated aircraft per run")
    parser.add_argument("--train-aircraft", type=int, default=100,
                        help="simulated aircraft of the training run (small, so that the real tracks are "
                             "not a rarity in training: production trains on the traffic it scores)")
    parser.add_argument("--snapshots", type=int, default=120, help="snapshots per simulated run")
    parser.add_argument("--seed", type=int, default=None, help="seed of the training run (test: seed+1)")
    parser.add_argument("--anomaly-rate", type=float, default=0.05,
                        help="fraction of aircraft with an injected anomaly per period, test run")
    parser.add_argument("--train-anomaly-rate", type=float, default=None,
                        help="same for the training run (default simulator.anomaly_rate)")
    parser.add_argument("--replay", nargs="*", default=None, metavar="FILE",
                        help="real recorded tracks, assumed clean (default: the quickstart fixture)")
    parser.add_argument("--model", default=None, metavar="VERSION",
                        help="evaluate a published artefact instead of training one")
    parser.add_argument("--no-rules", action="store_true", help="skip the rules (no Spark)")
    parser.add_argument("--out", default=None, help="output directory (default <storage.root>/_reports/evaluation)")


def run(args, settings) -> int:
    from lakehouse.settings import join_path
    from ml.artefact import ArtefactError
    from ml.assessment import evaluate
    from ml.training import TrainingError

    out = args.out or join_path(settings.storage.root, "_reports", "evaluation")
    try:
        evaluate(settings, out, aircraft=args.aircraft, train_aircraft=args.train_aircraft, snapshots=args.snapshots, seed=args.seed,
                 anomaly_rate=args.anomaly_rate, train_anomaly_rate=args.train_anomaly_rate,
                 replay=args.replay, model_version=args.model, rules=not args.no_rules)
    except (ArtefactError, TrainingError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    print(open(os.path.join(out, "evaluation.md")).read())
    log.info("wrote %s/evaluation.{json,md} and histogram.png", out)
    return 0
