"""Train the anomaly model on ``silver.flights`` and publish a new versioned artefact.

    opensky-lakehouse train [--delta-version N | --replay FILE ...] [--contamination C]

Reads the table with delta-rs at version N (default: the latest), fits the tail model
(``ml.detector.TailModel``) on the consistency checks of ml.features and writes ``<ml.model_dir>/vNNNN`` with its
metadata. ``--replay`` trains on recorded tracks (replay files) instead, as silver would hold them:
how the demo has a model before its silver table has any data. A running gold job picks the new
version up within ``ml.reload_interval_s``.
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger("ml.train")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--delta-version", type=int, default=None, metavar="N",
                        help="silver.flights version to train on (default: latest)")
    parser.add_argument("--replay", nargs="+", metavar="FILE", default=None,
                        help="train on these recorded tracks (replay files) instead of silver.flights")
    parser.add_argument("--contamination", type=float, default=None,
                        help="override ml.contamination for this model")



def run(args, settings) -> int:
    from lakehouse.settings import ConfigError
    from ml.artefact import ArtefactError
    from ml.training import TrainingError, train

    if args.contamination is not None:
        if not 0 < args.contamination <= 0.5:
            raise ConfigError(f"--contamination: expected a fraction in (0, 0.5], got {args.contamination}")
        settings = settings.replace(ml={"contamination": args.contamination})
    try:
        if args.replay and args.delta_version is not None:
            raise TrainingError("--replay and --delta-version: one source at a time")
        version, meta = train(settings, args.delta_version, args.replay)
    except (TrainingError, ArtefactError) as exc:
        log.error("%s", exc)
        return 1
    summary = {k: meta[k] for k in ("version", "score_threshold", "trained_on", "created_at", "sha256")}
    print(json.dumps(summary, indent=2))
    return 0
