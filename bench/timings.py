"""Where a micro-batch's time goes: the split of each trigger, from ``streaming.timings_log``.

The layer jobs append one JSON line per micro-batch that read data (see
``lakehouse.jobs.progress.append_timings``): ``kind: trigger`` carries Spark's own phases of the
trigger (``durationMs``: ``latestOffset`` and ``getBatch`` read offsets, ``queryPlanning``,
``walCommit`` writes the offset log, ``addBatch`` runs the ``foreachBatch`` handler,
``commitOffsets`` writes the commit log, ``triggerExecution`` the whole trigger);
``kind: handler`` splits ``addBatch`` into the handler's named steps (each read, Spark action
and Delta write), by wall time in the driver. :func:`summarize` gives, per job, the median of
each over the batches of a time span.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

# Spark's trigger phases, in the order a trigger runs them.
PHASES = ("latestOffset", "getBatch", "queryPlanning", "walCommit", "addBatch", "commitOffsets", "triggerExecution")


def read(path: str | Path) -> list[dict]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a stop mid-write
    return out


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def summarize(records: list[dict], since: float = 0.0, until: float = float("inf")) -> dict:
    """Per job: batches, median rows, median seconds of each trigger phase and handler step.

    Only batches that ended in [``since``, ``until``) (epoch s) count. Steps are listed in the
    order the handler first ran them; a step missing from a batch counts as 0 s there.
    """
    jobs: dict[str, dict] = {}
    for rec in records:
        if not since <= rec.get("at", 0) < until:
            continue
        job = jobs.setdefault(rec["job"], {"trigger": [], "handler": []})
        job[rec["kind"]].append(rec)
    out = {}
    for name, recs in jobs.items():
        triggers, handlers = recs["trigger"], recs["handler"]
        steps: list[str] = []
        for h in handlers:
            steps += [s for s in h["steps_s"] if s not in steps]
        out[name] = {
            "batches": len(triggers),
            "rows_median": _median([t["rows"] for t in triggers]),
            "trigger_s": {p: _median([t["phases_ms"][p] / 1000 for t in triggers if p in t["phases_ms"]])
                          for p in PHASES},
            "handler_s": _median([h["total_s"] for h in handlers]),
            "steps_s": {s: _median([h["steps_s"].get(s, 0.0) for h in handlers]) for s in steps},
        }
    return out


def render(split: dict) -> list[str]:
    """Markdown lines: one table per job, trigger phases then handler steps (median s)."""
    out = []
    for job, s in split.items():
        t = s["trigger_s"]
        out += [f"`{job}`: {s['batches']} micro-batches, median {s['rows_median'] or 0:,.0f} rows; "
                f"median seconds per trigger:", "",
                "| part | s |", "|---|---:|"]
        out += [f"| trigger: {p} | {t[p]:.2f} |" for p in PHASES if t.get(p) is not None]
        out += [f"| handler step: {step} | {v:.2f} |" for step, v in s["steps_s"].items() if v is not None]
        out.append("")
    return out
