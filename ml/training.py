"""Training: ``silver.flights`` at a Delta version -> features -> the tail model (``ml.detector``).

``read_silver`` reads the table with delta-rs (no Spark needed); ``fit_model`` is pure (frame in,
payload out) so the evaluation trains exactly as ``opensky-lakehouse train`` does.
"""

from __future__ import annotations

import logging
import platform
import time
from datetime import datetime, timezone
from importlib.metadata import version as pkg_version

import pandas as pd

from lakehouse.catalog import table_path
from lakehouse.delta_rs import delta_uri, storage_options
from lakehouse.settings import Settings
from ml.features import (
    CHECKS,
    FEATURES,
    STATE_COLUMNS,
    add_previous_state,
    build_features,
    imputation_medians,
    impute,
)

log = logging.getLogger(__name__)
train_log = logging.getLogger("ml.train")

SILVER = "silver.flights"


class TrainingError(RuntimeError):
    """Nothing to train on, or the requested table version does not exist."""


def read_silver(settings: Settings, version: int | None = None) -> tuple[pd.DataFrame, int]:
    """The state columns of ``silver.flights`` at ``version`` (default latest) and that version."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    path = table_path(settings, SILVER)
    try:
        dt = DeltaTable(delta_uri(path), storage_options=storage_options(settings))
    except TableNotFoundError:
        raise TrainingError(f"{SILVER} does not exist at {path}: run the silver job first") from None
    latest = dt.version()
    if version is not None:
        if not 0 <= version <= latest:
            raise TrainingError(f"{SILVER} has versions 0..{latest}, not {version}")
        try:
            dt.load_as_version(version)
        except DeltaError as exc:
            raise TrainingError(f"{SILVER} version {version} cannot be read ({exc}); vacuumed?") from None
    frame = dt.to_pandas(columns=list(STATE_COLUMNS))
    return frame, dt.version()


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        **{name: pkg_version(name) for name in ("scikit-learn", "numpy", "pandas", "pyarrow")},
    }


def fit_model(states: pd.DataFrame, settings: Settings) -> tuple[dict, dict]:
    """Fit on silver state rows (previous state added here). Returns (payload, training stats).

    The score threshold is the training score quantile at ``1 - ml.contamination``: with
    contamination c, a fraction c of states like the training data raises an alarm.
    """
    import numpy as np

    from ml.detector import TailModel

    cfg = settings.ml
    if len(states) < 2:
        raise TrainingError(f"{len(states)} state(s) to train on: need at least 2")
    frame = add_previous_state(states)
    if cfg.max_training_rows and len(frame) > cfg.max_training_rows:
        # sample AFTER the previous state is attached, so sampled rows keep their kinematics
        frame = frame.sample(n=cfg.max_training_rows, random_state=cfg.random_state)
    features = build_features(frame)
    medians = imputation_medians(features)
    matrix = impute(features, medians)
    pipeline = TailModel(columns=tuple(FEATURES.index(c) for c in CHECKS), quantile=cfg.tail_quantile)
    pipeline.fit(matrix)
    threshold = float(np.quantile(-pipeline.score_samples(matrix), 1 - cfg.contamination))
    payload = {"pipeline": pipeline, "features": list(FEATURES), "medians": medians, "threshold": threshold}
    stats = {
        "rows": int(len(frame)),
        "aircraft": int(frame["icao24"].nunique()),
        "rows_with_previous_state": int(features["has_prev"].sum()),
        "missing_fraction": {name: round(float(v), 4) for name, v in features.isna().mean().items() if v > 0},
    }
    return payload, stats


def metadata_for(payload: dict, stats: dict, settings: Settings, delta_version: int | None,
                 source: str) -> dict:
    cfg = settings.ml
    return {
        "features": list(FEATURES),
        "imputation_medians": payload["medians"],
        "score_threshold": payload["threshold"],
        "parameters": {
            "model": "TailModel",
            "checks": list(CHECKS),
            "check_scales": [round(float(x), 4) for x in payload["pipeline"].scale_],
            "tail_quantile": cfg.tail_quantile,
            "contamination": cfg.contamination,
            "random_state": cfg.random_state,
            "max_training_rows": cfg.max_training_rows,
        },
        "libraries": library_versions(),
        "trained_on": {"table": source, "delta_version": delta_version, **stats},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def train(settings, delta_version: int | None = None, replay: list[str] | None = None) -> tuple[str, dict]:
    """``opensky-lakehouse train``: read silver (or the recorded tracks ``replay``), fit, publish a new
    versioned artefact. Returns (version, metadata)."""
    from ml.artefact import model_dir, read_metadata, save_artefact
    from ml.labelled import replay_states

    started = time.monotonic()
    if replay:
        try:
            states, version_read, source = replay_states(settings, replay)[list(STATE_COLUMNS)], None, "replay"
        except FileNotFoundError as exc:
            raise TrainingError(f"--replay: {exc}") from None
        train_log.info("read %d states from %s", len(states), ", ".join(replay))
    else:
        states, version_read = read_silver(settings, delta_version)
        source = SILVER
        train_log.info("read %s version %d: %d states", SILVER, version_read, len(states))
    payload, stats = fit_model(states, settings)
    if replay:
        stats["files"] = [str(p) for p in replay]
    directory = model_dir(settings)
    version = save_artefact(directory, payload, metadata_for(payload, stats, settings, version_read, source))
    train_log.info("published model %s in %s (%d rows, %.1f s)", version, directory, stats["rows"],
             time.monotonic() - started)
    return version, read_metadata(directory, version)
