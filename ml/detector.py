"""The anomaly model: each consistency check against its own tail in the training data.

A state is anomalous when one of its consistency checks (``ml.features.CHECKS``: flown farther
than its ground speed allows, an altitude change its vertical rate does not explain, GNSS and
barometric altitude apart, a track off the course flown, a speed change no aircraft makes) lies
far beyond what that check reaches on the training traffic. :class:`TailModel` learns, per check,
the training quantile ``quantile`` (its scale); a state's contribution per check is its value over
that scale, and its score the largest contribution: about 1 at the edge of ordinary traffic,
higher the stranger. The check with the largest contribution is the reason given for an alarm.

Why not an IsolationForest over every feature (the model before): measured by
``opensky-lakehouse evaluate``, the forest averaged path lengths over 20 features, so one check far
out was diluted by the others, and real tracks' own noise (positions that freeze, altitude
decoding glitches) set its threshold: it found 0 of 195 states of the kinds no rule can see.
Scored check by check, 1.00 of them at 0.3 % false alarms on real tracks (see conf/default.yaml).

Scikit-learn's estimator conventions: ``fit(X)``, ``score_samples(X)`` (higher = more normal,
as IsolationForest's), ``get_params``/``set_params``, so artefacts and the pandas UDF call it as
they called the forest. It does not derive from scikit-learn's base classes: an artefact is
unpickled in every Python worker that scores, and those bases would import scikit-learn and SciPy
there (~70 MB more per worker, for nothing the scoring calls). Artefacts pickled when it did
derive from them load the same (their state is the same attributes).
"""

from __future__ import annotations

import numpy as np


class TailModel:
    """Per-check tail scales learned from training traffic; score = largest check / its scale.

    ``columns``: the indexes of the checks in the feature matrix; ``quantile``: the training
    quantile that scales each check; ``floor``: the smallest scale (a check that is 0 on every
    training state must still differ by a measurable amount before it counts).
    """

    def __init__(self, columns: tuple[int, ...] = (), quantile: float = 0.999, floor: float = 0.5):
        self.columns = columns
        self.quantile = quantile
        self.floor = floor

    def get_params(self, deep: bool = True) -> dict:
        return {"columns": self.columns, "quantile": self.quantile, "floor": self.floor}

    def set_params(self, **params) -> TailModel:
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"TailModel has no parameter {name!r}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"TailModel(columns={self.columns}, quantile={self.quantile}, floor={self.floor})"

    def fit(self, X, y=None):
        checks = np.asarray(X, dtype=float)[:, list(self.columns)]
        self.scale_ = np.maximum(np.nanquantile(checks, self.quantile, axis=0), self.floor)
        return self

    def contributions(self, X) -> np.ndarray:
        """Each check over its scale (rows x checks); 0 where a check is unknown."""
        checks = np.asarray(X, dtype=float)[:, list(self.columns)]
        return np.nan_to_num(checks / self.scale_, nan=0.0)

    def score_samples(self, X) -> np.ndarray:
        """Minus the largest contribution: lower = stranger (scikit-learn's convention)."""
        contributions = self.contributions(X)
        return -contributions.max(axis=1) if contributions.shape[1] else np.zeros(len(contributions))
