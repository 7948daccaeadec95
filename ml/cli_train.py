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
import time

log = logging.getLogger("ml.train")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--delta-version", type=int, default=None, metavar="N",
                        help="silver.flights version to train on (default: latest)")
    parser.add_argument("--replay", nargs="+", metavar="FILE", default=None,
                        help="train on these recorded tracks (replay files) instead of silver.flights")
    parser.add_argument("--contamination", type=float, default=None,
                        help="override ml.contamination for this model")


def train(settings, delta_version: int | None = None, replay: list[str] | None = None) -> tuple[str, dict]:
    """Read silver (or the recorded tracks ``replay``), fit, publish. Returns (version, metadata)."""
    from ml.artefact import model_dir, read_metadata, save_artefact
    from ml.features import STATE_COLUMNS
    from ml.labelled import replay_states
    from ml.training import SILVER, TrainingError, fit_model, metadata_for, read_silver

    started = time.monotonic()
    if replay:
        try:
            states, version_read, source = replay_states(settings, replay)[list(STATE_COLUMNS)], None, "replay"
        except FileNotFoundError as exc:
            raise TrainingError(f"--replay: {exc}") from None
        log.info("read %d states from %s", len(states), ", ".join(replay))
    else:
        states, version_read = read_silver(settings, delta_version)
        source = SILVER
        log.info("read %s version %d: %d states", SILVER, version_read, len(states))
    payload, stats = fit_model(states, settings)
    if replay:
        stats["files"] = [str(p) for p in replay]
    directory = model_dir(settings)
    version = save_artefact(directory, payload, metadata_for(payload, stats, settings, version_read, source))
    log.info("published model %s in %s (%d rows, %.1f s)", version, directory, stats["rows"],
             time.monotonic() - started)
    return version, read_metadata(directory, version)


def run(args, settings) -> int:
    from lakehouse.settings import ConfigError
    from ml.artefact import ArtefactError
    from ml.training import TrainingError

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
