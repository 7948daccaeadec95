"""Versioned model artefacts: save, list, verify and load.

Layout under ``ml.model_dir`` (relative paths resolve against ``storage.root``)::

    <model_dir>/v0001/model.pkl       pickled {"pipeline", "features", "medians", "threshold"}
    <model_dir>/v0001/metadata.json   features, parameters, library versions, the Delta version
                                      and row count trained on, creation time, sha256 of model.pkl

A version directory is written under a temporary name and renamed into place, so a reader
never sees half an artefact. Loading checks the sha256 BEFORE unpickling and refuses an
artefact whose checksum or feature list does not match the running code, with a message that
says what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from lakehouse.settings import Settings, resolve_path
from ml.features import FEATURES, feature_matrix

MODEL_FILE = "model.pkl"
METADATA_FILE = "metadata.json"
_VERSION = re.compile(r"^v(\d{4,})$")


class ArtefactError(RuntimeError):
    """A model artefact is missing, tampered with or built for other features."""


def model_dir(settings: Settings) -> str:
    """The local directory of the model artefacts.

    Relative to ``storage.root`` when the root is local. With an object-store root
    (``s3a://...``) a relative ``ml.model_dir`` becomes ``data/models/<root as a name>/<model_dir>``
    on the driver's disk: artefacts are files the driver opens (it broadcasts the model to the
    executors), so the default must work on S3 too rather than stop every gold batch.
    """
    configured = settings.ml.model_dir
    root = settings.storage.root
    if "://" in root and "://" not in configured and not os.path.isabs(os.path.expanduser(configured)):
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", root).strip("_")
        return resolve_path(os.path.join("data", "models", name, configured))
    path = resolve_path(configured, base=root)
    if "://" in path:
        raise ArtefactError(
            f"ml.model_dir resolves to {path}: model artefacts need a local (or mounted) directory; "
            "set ml.model_dir to an absolute local path"
        )
    return path


def list_versions(directory: str) -> list[str]:
    """Published versions, oldest first (``v0001``, ``v0002``, ...)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [n for n in names if _VERSION.match(n) and os.path.isfile(os.path.join(directory, n, METADATA_FILE))]
    return sorted(found, key=lambda n: int(_VERSION.match(n).group(1)))


def latest_version(directory: str) -> str | None:
    versions = list_versions(directory)
    return versions[-1] if versions else None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Model:
    """A verified, loaded artefact. ``score`` is the one scoring function (pandas in, scores out)."""

    version: str
    pipeline: Any
    features: tuple[str, ...]
    medians: dict[str, dict[str, float]]
    threshold: float
    metadata: dict

    def score(self, df) -> np.ndarray:
        """Anomaly score per row of ``df`` (state + previous-state columns): higher = stranger.

        ``-score_samples`` of the model (``ml.detector.TailModel``): the largest consistency
        check over its training scale, >= 0, below 1 for ordinary traffic.
        """
        if len(df) == 0:
            return np.empty(0)
        return -self.pipeline.score_samples(feature_matrix(df, self.medians))


    def score_and_explain(self, df, threshold: float) -> tuple[np.ndarray, list[str | None]]:
        """Scores (as :meth:`score`) and, for each state scored above ``threshold``, why: the
        consistency checks beyond the edge of the training traffic (contribution > 1), strongest
        first, at most three, in words (``ml.features.CHECK_REASONS``); None for the others."""
        from ml.features import CHECK_REASONS, CHECKS

        if len(df) == 0:
            return np.empty(0), []
        contributions = self.pipeline.contributions(feature_matrix(df, self.medians))
        scores = contributions.max(axis=1)
        reasons: list[str | None] = [None] * len(scores)
        for i in np.flatnonzero(scores > threshold):
            order = np.argsort(-contributions[i])[:3]
            reasons[i] = "; ".join(CHECK_REASONS[CHECKS[j]] for j in order if contributions[i, j] > 1.0)
        return scores, reasons


def save_artefact(directory: str, payload: dict, metadata: dict, max_attempts: int = 20) -> str:
    """Publish ``payload`` (pickled) with ``metadata`` as the next version; return the version."""
    os.makedirs(directory, exist_ok=True)
    blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
    os.makedirs(tmp)
    try:
        for _ in range(max_attempts):  # bounded: another trainer may publish the same number
            current = latest_version(directory)
            number = int(_VERSION.match(current).group(1)) + 1 if current else 1
            version = f"v{number:04d}"
            meta = {**metadata, "version": version, "model_file": MODEL_FILE, "sha256": sha256_bytes(blob)}
            with open(os.path.join(tmp, MODEL_FILE), "wb") as fh:
                fh.write(blob)
            with open(os.path.join(tmp, METADATA_FILE), "w") as fh:
                json.dump(meta, fh, indent=2, sort_keys=True)
            try:
                os.rename(tmp, os.path.join(directory, version))  # atomic; fails if it exists
                return version
            except OSError:
                continue
        raise ArtefactError(f"could not publish a new version in {directory} after {max_attempts} attempts")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_metadata(directory: str, version: str) -> dict:
    path = os.path.join(directory, version, METADATA_FILE)
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        known = ", ".join(list_versions(directory)) or "none"
        raise ArtefactError(f"model version {version!r} not found in {directory} (published: {known})") from None
    except ValueError as exc:
        raise ArtefactError(f"model {version}: {path} is not valid JSON ({exc})") from None


def read_verified_bytes(directory: str, version: str) -> tuple[bytes, dict]:
    """The model file's bytes and metadata, after checking checksum and feature list."""
    meta = read_metadata(directory, version)
    path = os.path.join(directory, version, meta.get("model_file", MODEL_FILE))
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except FileNotFoundError:
        raise ArtefactError(f"model {version}: {path} is missing") from None
    actual = sha256_bytes(blob)
    if actual != meta.get("sha256"):
        raise ArtefactError(
            f"model {version}: checksum mismatch for {path} (metadata says {meta.get('sha256')}, file is "
            f"{actual}); the artefact was modified or damaged: refusing to load it, retrain with "
            "`opensky-lakehouse train`"
        )
    check_features(version, meta.get("features"))
    return blob, meta


def check_features(version: str, features) -> None:
    if list(features or ()) != list(FEATURES):
        expected, got = list(FEATURES), list(features or ())
        missing = [f for f in expected if f not in got]
        extra = [f for f in got if f not in expected]
        detail = f"missing {missing}, unexpected {extra}" if missing or extra else "same names, different order"
        raise ArtefactError(
            f"model {version}: feature list does not match this code ({detail}); it was trained by another "
            "version of ml.features: refusing to load it, retrain with `opensky-lakehouse train`"
        )


def model_from_bytes(blob: bytes, metadata: dict) -> Model:
    """Unpickle verified bytes (see :func:`read_verified_bytes`) into a :class:`Model`."""
    if sha256_bytes(blob) != metadata.get("sha256"):
        raise ArtefactError(f"model {metadata.get('version')}: checksum mismatch of the model bytes")
    payload = pickle.loads(blob)  # noqa: S301 - bytes verified against the recorded sha256 above
    check_features(metadata["version"], payload.get("features"))
    return Model(
        version=metadata["version"],
        pipeline=payload["pipeline"],
        features=tuple(payload["features"]),
        medians=dict(payload["medians"]),
        threshold=float(payload["threshold"]),
        metadata=metadata,
    )


def load_artefact(directory: str, version: str | None = None) -> Model:
    """Load ``version`` (default the newest) after verifying it; :class:`ArtefactError` otherwise."""
    version = version or latest_version(directory)
    if version is None:
        raise ArtefactError(f"no model artefact in {directory}: run `opensky-lakehouse train` first")
    blob, meta = read_verified_bytes(directory, version)
    return model_from_bytes(blob, meta)
