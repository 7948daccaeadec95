"""Detection quality on labelled data: ML score alone, rules alone, both together.

Pure metric functions over pandas frames with ``kind`` (null = normal) and ``after_anomaly``
(see ``ml.labelled.attach_labels``). Per anomaly kind k, precision/recall/F1 are computed on the
states of kind k plus every normal state (one kind against normal traffic: a flag does not say
which kind it is, so the false alarms are shared by every kind); "all" uses every labelled state,
"rule-invisible" the states of the kinds no rule can see (``ingestion.simulator.MODEL_KINDS``),
the ones the model is there for.
States right after a labelled one (``after_anomaly``) are neither true nor false alarms and are
reported apart.

The rules are the gold job's (``lakehouse.transforms.rules``, Spark columns) applied through a
local Spark session; :func:`rule_hits` is the seam.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ingestion.simulator import MODEL_KINDS
from lakehouse.settings import Settings

DETECTORS = ("ml", "rules", "both")


def _prf(tp: int, fp: int, n_pos: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / n_pos if n_pos else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else (0.0 if n_pos else None)
    return {"states": int(n_pos), "detected": int(tp), "false_alarms": int(fp),
            "precision": _round(precision), "recall": _round(recall), "f1": _round(f1)}


def _round(x):
    return None if x is None else round(float(x), 4)


def detection_metrics(labelled: pd.DataFrame, flags: np.ndarray) -> dict:
    """Per kind and overall precision/recall/F1, plus the false-alarm rate on normal states."""
    flags = np.asarray(flags, dtype=bool)
    kind = labelled["kind"]
    after = labelled["after_anomaly"].to_numpy(dtype=bool)
    normal = kind.isna().to_numpy() & ~after
    fp = int((flags & normal).sum())
    out = {"per_kind": {}}
    for k in sorted(kind.dropna().unique()):
        is_k = (kind == k).to_numpy()
        out["per_kind"][k] = _prf(int((flags & is_k).sum()), fp, int(is_k.sum()))
    labelled_mask = kind.notna().to_numpy()
    out["all"] = _prf(int((flags & labelled_mask).sum()), fp, int(labelled_mask.sum()))
    invisible = kind.isin(MODEL_KINDS).to_numpy()
    if invisible.any():
        out["rule_invisible"] = _prf(int((flags & invisible).sum()), fp, int(invisible.sum()))
    out["normal_states"] = int(normal.sum())
    out["false_alarm_rate"] = _round(fp / normal.sum()) if normal.sum() else None
    out["after_anomaly_states"] = int(after.sum())
    out["after_anomaly_flagged"] = int((flags & after).sum())
    return out


# A barometric altitude this far from the previous report's, airborne both times, is a decoding
# glitch of the recording, not flight: 1,000 m in one report is 100 m/s vertically at 10 s.
GLITCH_ALTITUDE_STEP_M = 1000.0


def recording_glitches(states: pd.DataFrame) -> np.ndarray:
    """Real states whose altitude jumped by more than :data:`GLITCH_ALTITUDE_STEP_M` since the
    previous report (both airborne). The model rightly flags them, but the real tracks are the
    evaluation's clean traffic: their false-alarm rate is also reported without them."""
    if not len(states):
        return np.zeros(0, dtype=bool)
    step = (pd.to_numeric(states["baro_altitude"]) - pd.to_numeric(states["prev_baro_altitude"])).abs()
    airborne = (states["on_ground"] == False) & (states["prev_on_ground"] == False)  # noqa: E712
    return ((step > GLITCH_ALTITUDE_STEP_M) & airborne).fillna(False).to_numpy(dtype=bool)


def rules_available() -> bool:
    try:
        import lakehouse.transforms.rules  # noqa: F401
    except ImportError:
        return False
    return True


RULE_INPUT = ("icao24", "event_time", "latitude", "longitude", "baro_altitude", "on_ground", "velocity",
              "vertical_rate", "squawk", "prev_event_time", "prev_latitude", "prev_longitude", "prev_velocity",
              "prev_baro_altitude")


def rule_hits(spark, states: pd.DataFrame, settings: Settings) -> list[tuple[str, ...]]:
    """Names of the gold rules that fire on each row of ``states`` (same order)."""
    from pyspark.sql import functions as F

    from lakehouse.transforms.rules import apply_rules

    frame = states[[c for c in RULE_INPUT if c in states.columns]].copy()
    frame["_row"] = np.arange(len(frame), dtype=np.int64)
    for column in ("event_time", "prev_event_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True).dt.tz_localize(None)
    schema = ("icao24 string, event_time timestamp, latitude double, longitude double, baro_altitude double, "
              "on_ground boolean, velocity double, vertical_rate double, squawk string, "
              "prev_event_time timestamp, prev_latitude double, prev_longitude double, prev_velocity double, "
              "prev_baro_altitude double, _row long")
    frame["on_ground"] = frame["on_ground"].astype(object).where(frame["on_ground"].notna(), None)
    df = spark.createDataFrame(frame, schema=schema)
    fired = df.transform(apply_rules(settings.rules)).select("_row", F.col("rules")).toPandas()
    fired = fired.sort_values("_row")
    return [tuple(r) if r is not None else () for r in fired["rules"]]


def threshold_sweep(train_scores: np.ndarray, test: pd.DataFrame, test_scores: np.ndarray,
                    real_scores: np.ndarray, rule_flags: np.ndarray | None, real_rule_flags: np.ndarray | None,
                    contaminations=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)) -> list[dict]:
    """What each contamination (= training score quantile as threshold) would give."""
    rows = []
    for c in contaminations:
        threshold = float(np.quantile(train_scores, 1 - c))
        ml = test_scores > threshold
        metrics = detection_metrics(test, ml)
        row = {"contamination": c, "threshold": round(threshold, 4), "ml": metrics["all"],
               "ml_rule_invisible_recall": metrics.get("rule_invisible", {}).get("recall"),
               "ml_false_alarm_rate_real": _round((real_scores > threshold).mean()) if len(real_scores) else None}
        if rule_flags is not None:
            row["both"] = detection_metrics(test, ml | rule_flags)["all"]
            row["both_false_alarm_rate_real"] = (
                _round(((real_scores > threshold) | real_rule_flags).mean()) if len(real_scores) else None)
        rows.append(row)
    return rows


def write_histogram(path: str, test: pd.DataFrame, test_scores: np.ndarray, real_scores: np.ndarray,
                    threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    bins = np.linspace(0.0, max(3.0, min(20.0, float(np.max(test_scores, initial=0)))), 60)
    normal = test["kind"].isna().to_numpy() & ~test["after_anomaly"].to_numpy(dtype=bool)
    ax.hist(test_scores[normal], bins=bins, alpha=0.5, label="simulated, normal", density=True)
    if len(real_scores):
        ax.hist(real_scores, bins=bins, alpha=0.5, label="real tracks (clean)", density=True)
    for k in sorted(test["kind"].dropna().unique()):
        ax.hist(test_scores[(test["kind"] == k).to_numpy()], bins=bins, histtype="step", linewidth=1.5,
                label=f"injected: {k}", density=True)
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("anomaly_score (higher = stranger)")
    ax.set_ylabel("density (log)")
    ax.set_title("Anomaly scores (largest consistency check over its training scale)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_report(report: dict) -> str:
    lines = ["# Anomaly detection: evaluation", ""]
    m = report["model"]
    lines += [f"Model: {m['version']} (threshold {m['threshold']:.4f}, contamination {m['contamination']}); "
              f"test: {report['data']['test_states']} simulated states "
              f"({report['data']['labelled_states']} labelled), "
              f"{report['data']['real_test_states']} real states.", ""]
    lines += ["| detector | kind | states | detected | false alarms | precision | recall | F1 |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    for det in DETECTORS:
        metrics = report["detectors"].get(det)
        if metrics is None:
            lines.append(f"| {det} | (rules not available) | | | | | | |")
            continue
        rows = [*metrics["per_kind"].items(), ("all", metrics["all"])]
        if "rule_invisible" in metrics:
            rows.append(("all rule-invisible", metrics["rule_invisible"]))
        for k, row in rows:
            name = f"{k} (no rule)" if k in MODEL_KINDS else k
            lines.append(f"| {det} | {name} | {row['states']} | {row['detected']} | {row['false_alarms']} | "
                         f"{fmt(row['precision'])} | {fmt(row['recall'])} | {fmt(row['f1'])} |")
    lines += ["", "| detector | false-alarm rate, simulated normal | false-alarm rate, real tracks | "
              "false-alarm rate, real tracks without decoding glitches | flagged right after an anomaly |",
              "|---|---:|---:|---:|---:|"]
    for det in DETECTORS:
        metrics = report["detectors"].get(det)
        if metrics is None:
            continue
        clean = report.get("real_false_alarm_rate_without_glitches", {}).get(det)
        lines.append(f"| {det} | {fmt(metrics['false_alarm_rate'])} | {fmt(report['real_false_alarm_rate'].get(det))} "
                     f"| {fmt(clean)} | {metrics['after_anomaly_flagged']}/{metrics['after_anomaly_states']} |")
    if "real_glitches" in report:
        g = report["real_glitches"]
        lines += ["", f"Decoding glitches in the real tracks (barometric altitude more than "
                  f"{GLITCH_ALTITUDE_STEP_M:,.0f} m from the previous report, 10 s before): {g['states']} states, "
                  f"{g['flagged_ml']} flagged by the model."]
    if report.get("real_rules_fired"):
        fired = ", ".join(f"{k} {v}" for k, v in report["real_rules_fired"].items())
        lines += ["", f"Rules fired on the real tracks: {fired}."]
    lines += ["", "Threshold sweep (threshold = training score quantile at 1 - contamination):", "",
              "| contamination | threshold | ML P | ML R | ML R rule-invisible | ML F1 | ML false alarms real | both F1 "
              "| both false alarms real |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["sweep"]:
        both = row.get("both", {})
        lines.append(f"| {row['contamination']} | {row['threshold']:.4f} | {fmt(row['ml']['precision'])} | "
                     f"{fmt(row['ml']['recall'])} | {fmt(row.get('ml_rule_invisible_recall'))} | {fmt(row['ml']['f1'])} | "
                     f"{fmt(row['ml_false_alarm_rate_real'])} | "
                     f"{fmt(both.get('f1'))} | {fmt(row.get('both_false_alarm_rate_real'))} |")
    lines += ["", "Per kind: the states of that kind against all normal states (false alarms shared). "
              "(no rule): a kind that stays inside every rule's bounds (ingestion.simulator.MODEL_KINDS).",
              "Score histogram: `histogram.png`.", ""]
    return "\n".join(lines)
