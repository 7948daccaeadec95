"""Spark scoring step: ``df.transform(lambda d: add_ml_scores(d, settings))``.

Adds ``anomaly_score`` (double, higher = stranger), ``ml_anomaly`` (boolean), ``model_version``
(string) and ``ml_reason`` (string: why the model flagged the state, in words; null when it did
not). The input needs the columns of ``ml.features.INPUT_COLUMNS`` (the
silver state plus the aircraft's previous state).

How the model reaches the workers: on the driver, :class:`ModelSource` resolves the version to
use (``ml.model_version`` if pinned, else the newest artefact, looked up at most every
``ml.reload_interval_s`` seconds), verifies it (checksum, feature list) and broadcasts its bytes
once per version. The pandas UDF (iterator form, ``Iterator[tuple[pd.Series, ...]] ->
Iterator[pd.DataFrame]``, called on the input columns as they are, not packed in a struct)
unpickles a version once per Python worker process (cache keyed by checksum) and scores each
Arrow batch with ``Model.score_and_explain``: the same feature function as training. It returns
only what needs Python (score and reason); ``ml_anomaly`` is the score against the threshold,
compared in Spark: the Arrow round trip is most of the step's cost (``bench/scoring.py``).
Called once per micro-batch (inside the gold job's ``foreachBatch``), a newly
published artefact is used from the next batch on, without a restart.

No artefact yet: null score, ``ml_anomaly`` false, null ``model_version``, and one log line
saying that the gold job runs on its rules only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse.settings import MlSettings, Settings
from lakehouse.transforms.gold import no_model
from ml.artefact import ArtefactError, latest_version, model_dir, model_from_bytes, read_verified_bytes
from ml.features import INPUT_COLUMNS

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("anomaly_score", "ml_anomaly", "model_version", "ml_reason")
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
_RESULT_TYPE = "anomaly_score double, ml_reason string"


@dataclass
class Deployed:
    version: str
    sha256: str
    threshold: float
    broadcast: object  # pyspark Broadcast of (model bytes, metadata)
    # threshold -> the columns add_ml_scores adds: the UDF and its columns built once per version
    # (a new UDF every micro-batch pickled its closure and registered it in the JVM again)
    columns: dict = field(default_factory=dict)

    def score_columns(self, threshold: float) -> dict:
        if threshold not in self.columns:
            score = F.col("_ml.anomaly_score")
            self.columns[threshold] = {
                "_ml": make_scorer(self, threshold)(*[F.col(c) for c in INPUT_COLUMNS]),
                "outputs": {
                    "anomaly_score": score,
                    # As numpy compares: NaN is not above the threshold (Spark orders NaN above every number).
                    "ml_anomaly": F.coalesce(~F.isnan(score) & (score > F.lit(float(threshold))), F.lit(False)),
                    "model_version": F.lit(self.version),
                    "ml_reason": F.col("_ml.ml_reason"),
                },
            }
        return self.columns[threshold]


class ModelSource:
    """Driver side: which artefact to score with, re-checked at most every ``reload_interval_s``."""

    def __init__(self, directory: str):
        self.directory = directory
        self.current: Deployed | None = None
        self._checked_at: float | None = None
        self._said_rules_only = False
        self._lock = threading.Lock()

    def resolve(self, spark, settings: Settings) -> Deployed | None:
        cfg = settings.ml
        with self._lock:
            now = time.monotonic()
            pinned = cfg.model_version or None
            due = self._checked_at is None or now - self._checked_at >= cfg.reload_interval_s
            if pinned and (self.current is None or self.current.version != pinned):
                due = True
            if not due:
                return self.current
            self._checked_at = now
            wanted = pinned or latest_version(self.directory)
            if wanted is None:
                if not self._said_rules_only:
                    log.warning("no model artefact in %s: anomaly detection runs on the rules only "
                                "(run `opensky-lakehouse train`)", self.directory)
                    self._said_rules_only = True
                return None
            if self.current is not None and self.current.version == wanted:
                return self.current
            try:
                return self._deploy(spark, wanted)
            except ArtefactError as exc:
                if pinned or self.current is None:
                    raise
                log.error("%s; keeping model %s", exc, self.current.version)
                return self.current

    def version(self, spark, version: str) -> Deployed:
        """Exactly ``version`` (what a replayed micro-batch first scored with): the deployed one, or
        that artefact read and verified now (raises ``ArtefactError``)."""
        with self._lock:
            if self.current is not None and self.current.version == version:
                return self.current
            return self._deploy(spark, version)

    def _deploy(self, spark, version: str) -> Deployed:
        blob, meta = read_verified_bytes(self.directory, version)
        previous = self.current
        self.current = Deployed(version, meta["sha256"], float(meta["score_threshold"]),
                                spark.sparkContext.broadcast((blob, meta)))
        self._said_rules_only = False
        log.info("scoring with model %s (%s)%s", version, self.directory,
                 f", replacing {previous.version}" if previous else "")
        if previous is not None:
            previous.broadcast.unpersist(blocking=False)
        return self.current


_SOURCES: dict[str, ModelSource] = {}
_SOURCES_LOCK = threading.Lock()


def model_source(settings: Settings) -> ModelSource:
    """The driver's (process-wide) model source for ``ml.model_dir``."""
    directory = model_dir(settings)
    with _SOURCES_LOCK:
        return _SOURCES.setdefault(directory, ModelSource(directory))


# Worker side: verified models per checksum, one unpickling per Python worker process.
_WORKER_MODELS: dict[str, object] = {}


def _worker_model(broadcast, sha256: str):
    model = _WORKER_MODELS.get(sha256)
    if model is None:
        blob, meta = broadcast.value
        model = model_from_bytes(blob, meta)
        _WORKER_MODELS.clear()  # keep one version per worker: an old one is never used again
        _WORKER_MODELS[sha256] = model
    return model


def make_scorer(deployed: Deployed, threshold: float):
    """The pandas UDF for one version: called on the :data:`INPUT_COLUMNS` in that order, an
    iterator of column batches -> an iterator of (``anomaly_score``, ``ml_reason``) frames."""
    from pyspark.sql.functions import pandas_udf

    broadcast, sha256 = deployed.broadcast, deployed.sha256

    @pandas_udf(_RESULT_TYPE)
    def score(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
        model = _worker_model(broadcast, sha256)  # once per task at most; cached per worker
        for columns in batches:
            batch = pd.DataFrame(dict(zip(INPUT_COLUMNS, columns, strict=True)))
            scores, reasons = model.score_and_explain(batch, threshold)
            yield pd.DataFrame({"anomaly_score": scores, "ml_reason": reasons})

    return score


def add_ml_scores(df: DataFrame, settings: Settings) -> DataFrame:
    """Add ``anomaly_score``, ``ml_anomaly``, ``model_version`` (see the module docstring), with the
    model :meth:`ModelSource.resolve` picks now."""
    return df.transform(scored_by(model_source(settings).resolve(df.sparkSession, settings), settings.ml))


def scored_by(deployed: Deployed | None, cfg: MlSettings):
    """The scoring step of one resolved model (``None``: rules only, the same four columns null /
    false): ``df -> df`` with ``anomaly_score``, ``ml_anomaly``, ``model_version``, ``ml_reason``,
    against ``cfg.score_threshold`` or else the model's own threshold."""

    def step(df: DataFrame) -> DataFrame:
        missing = [c for c in INPUT_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"add_ml_scores: input lacks {', '.join(missing)} (see lakehouse.records.PREV_COLUMNS)")
        present = [c for c in OUTPUT_COLUMNS if c in df.columns]
        if present:
            df = df.drop(*present)
        if deployed is None:
            return no_model(df)
        df.sparkSession.conf.set(ARROW_BATCH_CONF, str(cfg.arrow_batch_size))
        columns = deployed.score_columns(cfg.score_threshold or deployed.threshold)
        return df.withColumn("_ml", columns["_ml"]).withColumns(columns["outputs"]).drop("_ml")

    return step
