"""Dashboard reads: delta-rs loads of ``gold.live_flights``, latest and 100 versions back.

The table is built with delta-rs, not with the gold job (5,000 gold micro-batches would take
hours on two cores): ``commits`` overwrites, each one simulated snapshot of ``rows`` aircraft
with exactly the catalog's ``gold.live_flights`` schema and the table properties every lakehouse
table gets (``lakehouse.table_setup.table_properties``: a Delta checkpoint every 100 commits, as the
Spark jobs write it). One overwrite per commit is what the gold job does per micro-batch, so the
log, checkpoints and dead data files look like a long-running gold table's.

A read is what the dashboard does with no cache: open the table (``DeltaTable``) at the latest
version or at ``latest - back`` and load it to Arrow. Each read is repeated ``repeats`` times
(median, min, max), before and after ``maintain``.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone

from bench.figures import figure

log = logging.getLogger("bench")

_ARROW_TYPES = {"string": "string", "bigint": "int64", "int": "int32", "double": "float64", "boolean": "bool_",
                "date": "date32"}


def arrow_schema(ddl_columns: list[str]):
    """pyarrow schema of a catalog DDL column list (the types the catalog uses)."""
    import pyarrow as pa

    def typ(t: str):
        t = t.strip().lower()
        if t.startswith("array<"):
            return pa.list_(typ(t[6:-1]))
        if t == "timestamp":
            return pa.timestamp("us", tz="UTC")
        return getattr(pa, _ARROW_TYPES[t])()

    return pa.schema([pa.field(c.split(" ", 1)[0], typ(c.split(" ", 1)[1])) for c in ddl_columns])


def live_snapshot(response: dict, schema, now: datetime):
    """One ``gold.live_flights`` snapshot from a simulator response (no anomaly columns set)."""
    import pyarrow as pa

    from lakehouse.records import STATE_FIELDS

    rows = response["states"]
    col = {name: [r[i] for r in rows] for i, name in enumerate(STATE_FIELDS)}
    ts = [datetime.fromtimestamp(t, timezone.utc) for t in col["time_position"]]
    data = {
        "icao24": col["icao24"], "callsign": [c.strip() or None for c in col["callsign"]],
        "origin_country": col["origin_country"], "time_position": col["time_position"], "event_time": ts,
        "last_contact": [datetime.fromtimestamp(t, timezone.utc) for t in col["last_contact"]],
        "longitude": col["longitude"], "latitude": col["latitude"], "baro_altitude": col["baro_altitude"],
        "on_ground": col["on_ground"], "velocity": col["velocity"], "true_track": col["true_track"],
        "vertical_rate": col["vertical_rate"], "sensors": col["sensors"], "geo_altitude": col["geo_altitude"],
        "squawk": col["squawk"], "spi": col["spi"], "position_source": col["position_source"],
        "category": col["category"], "rules": [[] for _ in rows], "rule_anomaly": [False] * len(rows),
        "anomaly_score": [0.0] * len(rows), "ml_anomaly": [False] * len(rows),
        "is_anomaly": [False] * len(rows), "model_version": [None] * len(rows), "updated_at": [now] * len(rows),
        "ml_reason": [None] * len(rows),
    }
    return pa.table(data, schema=schema)


def build_table(settings, path: str, commits: int, rows: int) -> float:
    """``commits`` overwrites of ``rows``-aircraft snapshots; returns the build time (s)."""
    from deltalake import write_deltalake

    from ingestion.simulator import Simulator
    from lakehouse.catalog import _split_ddl as split_ddl
    from lakehouse.catalog import table
    from lakehouse.table_setup import table_properties

    schema = arrow_schema(split_ddl(table("gold.live_flights").schema))
    sim = Simulator(seed=3, aircraft=rows, interval_s=settings.simulator.interval_s,
                    start_time=int(time.time()) - commits * int(settings.simulator.interval_s))
    started = last = time.perf_counter()
    for i, response in enumerate(sim.snapshots(commits)):
        snap = live_snapshot(response, schema, datetime.now(timezone.utc))
        if i == 0:
            write_deltalake(path, snap, mode="overwrite", configuration=table_properties(settings, "gold.live_flights"))
        else:
            write_deltalake(path, snap, mode="overwrite")
        if time.perf_counter() - last > 10:
            last = time.perf_counter()
            log.info("bench: [reads] building gold.live_flights: %d/%d commits (%.0f commits/s)", i + 1, commits,
                     (i + 1) / (last - started))
    return time.perf_counter() - started


def layout(path: str) -> dict:
    log_dir = os.path.join(path, "_delta_log")
    names = os.listdir(log_dir)
    data = [n for n in os.listdir(path) if n.endswith(".parquet")]
    return {
        "commit_files": sum(n.endswith(".json") for n in names),
        "checkpoints": sum(".checkpoint" in n for n in names),
        "data_files": len(data),
        "data_mb": sum(os.path.getsize(os.path.join(path, n)) for n in data) / 1e6,
    }


def time_reads(path: str, back: int, repeats: int, back_version: int | None = None) -> dict:
    """Time loads of the latest version and of ``back_version`` (default ``latest - back``).

    After ``maintain`` the caller pins ``back_version`` to the number timed before: maintain's own
    commits (OPTIMIZE, VACUUM START/END) move "latest" on, but not the data it holds.
    """
    from deltalake import DeltaTable

    latest = DeltaTable(path).version()
    back_version = latest - back if back_version is None else back_version
    out: dict = {"version": latest, "back_version": back_version}
    for label, version in (("latest", None), (f"{back}_back", back_version)):
        times = []
        rows = 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            dt = DeltaTable(path) if version is None else DeltaTable(path, version=version)
            rows = dt.to_pyarrow_table().num_rows
            times.append(time.perf_counter() - t0)
        out[label] = {"seconds": figure(times), "rows": rows}
    return out


def maintain(env, settings) -> dict:
    """``opensky-lakehouse maintain --table gold.live_flights`` (a subprocess, as a user runs it).

    With the configured retention (days), as users run it: the bench table is minutes old, so
    VACUUM deletes nothing here, and Delta rounds a retention to whole hours, so no shorter one
    could keep the timed back version while deleting older files. What this measures is whether
    maintain's compaction, checkpoint and commits change read latency.
    """
    import subprocess
    import sys

    from bench.env import REPO

    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "lakehouse", "maintain", "--table", "gold.live_flights"]
    result = subprocess.run(cmd, cwd=REPO, env=env.cli_env(settings), capture_output=True, text=True,
                            timeout=1800, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"maintain exited {result.returncode}: {result.stderr[-2000:]}")
    hours = settings.maintain.retention_hours
    how = (f"opensky-lakehouse maintain --table gold.live_flights (subprocess, retention {hours:g} h: on a "
           "minutes-old table VACUUM deletes nothing)")
    return {"how": how, "seconds": time.perf_counter() - t0, "retention_hours": hours}


def run_section(env, sizes) -> dict:
    from lakehouse.catalog import table_path

    settings = env.settings_for("reads")
    path = table_path(settings, "gold.live_flights")
    log.info("bench: [reads] building gold.live_flights with %s commits of %s aircraft (delta-rs writes)",
             f"{sizes.reads_commits:,}", f"{sizes.reads_rows:,}")
    build_s = build_table(settings, path, sizes.reads_commits, sizes.reads_rows)
    before_layout = layout(path)
    before = time_reads(path, sizes.reads_back, sizes.repeats)
    log.info("bench: [reads] before maintain: latest %.3f s, %d back %.3f s (%s)", before["latest"]["seconds"]["median"],
             sizes.reads_back, before[f"{sizes.reads_back}_back"]["seconds"]["median"], before_layout)
    done = maintain(env, settings)
    after_layout = layout(path)
    after = time_reads(path, sizes.reads_back, sizes.repeats, back_version=before["back_version"])
    log.info("bench: [reads] after maintain (%.1f s): latest %.3f s, %d back %.3f s (%s)", done["seconds"],
             after["latest"]["seconds"]["median"], sizes.reads_back,
             after[f"{sizes.reads_back}_back"]["seconds"]["median"], after_layout)
    return {
        "status": "ok", "unit": "seconds", "commits": sizes.reads_commits, "rows_per_commit": sizes.reads_rows,
        "back": sizes.reads_back, "repeats": sizes.repeats, "build_s": build_s,
        "built_with": "delta-rs write_deltalake(mode=overwrite) of simulated live_flights snapshots, catalog schema "
                      "and table properties (lakehouse.table_setup.table_properties)",
        "measured": "DeltaTable(path[, version]) + to_pyarrow_table(), no cache, each repeated; median/min/max",
        "maintain": done,
        "before": {**before, "layout": before_layout},
        "after": {**after, "layout": after_layout},
    }
