"""Write a gold lakehouse with a long history, for timing the dashboard (not a test).

    python -m tests.build_history_lake ROOT [--versions 1000] [--aircraft 2000]

Like the gold job: every batch overwrites gold.live_flights (one version per batch, 10 s of
event time apart), appends its flagged states (about 2 %) to gold.anomalies and, every 12
batches, a closed 2-minute window to gold.window_stats and gold.country_counts. Tables carry
the checkpoint interval ``ensure_table`` gives them (``lakehouse.table_setup.table_properties``). Synthetic traffic:
aircraft on straight tracks over Europe, seeded, schemas exactly the catalog's.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from lakehouse.table_setup import checkpoint_interval
from tests.gold_fixture import T0, arrow_schema, to_arrow

COUNTRIES = ["Germany", "France", "United Kingdom", "Spain", "Italy", "Ireland", "Netherlands",
             "Switzerland", "Poland", "United States", "Turkey", "Portugal"]


def live_batch(rng_state: dict, version: int, n: int) -> pd.DataFrame:
    base = rng_state["base"]
    t = T0 + timedelta(seconds=10 * version)
    lon = base.lon + np.sin(np.radians(base.track)) * 0.02 * version
    lat = base.lat + np.cos(np.radians(base.track)) * 0.02 * version
    rules = [["rapid_descent"] if f else [] for f in base.rule_flag]
    frame = pd.DataFrame({
        "icao24": base.icao24, "callsign": base.callsign, "origin_country": base.country,
        "time_position": int(t.timestamp()), "event_time": t, "last_contact": t,
        # Aircraft leaving the box re-enter on the other side: the traffic stays over Europe.
        "longitude": -10 + (lon + 10) % 35, "latitude": 36 + (lat - 36) % 24, "baro_altitude": base.alt,
        "on_ground": base.alt < 50, "velocity": base.speed, "true_track": base.track,
        "vertical_rate": np.where(base.rule_flag, -20.0, 0.0), "sensors": None, "geo_altitude": base.alt,
        "squawk": "1000", "spi": False, "position_source": 0, "category": 0,
        "rules": rules, "rule_anomaly": base.rule_flag, "anomaly_score": base.score,
        "ml_anomaly": base.ml_flag, "is_anomaly": base.rule_flag | base.ml_flag, "model_version": "bench",
        "updated_at": t, "ml_reason": None,
    })
    return frame


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--aircraft", type=int, default=2000)
    args = parser.parse_args(argv)
    from deltalake import write_deltalake

    rng = np.random.default_rng(7)
    n = args.aircraft
    base = pd.DataFrame({
        "icao24": [f"{i:06x}" for i in rng.choice(0xFFFFFF, n, replace=False)],
        "callsign": [f"TST{i:04d}" for i in range(n)],
        "country": rng.choice(COUNTRIES, n),
        "lon": rng.uniform(-10, 25, n), "lat": rng.uniform(36, 60, n),
        "track": rng.uniform(0, 360, n), "alt": rng.choice([0.0, 3000.0, 9000.0, 11000.0], n),
        "speed": rng.uniform(100, 260, n), "score": rng.beta(2, 8, n),
    })
    base["rule_flag"] = rng.random(n) < 0.01
    base["ml_flag"] = base.score > base.score.quantile(0.99)
    state = {"base": base}
    paths = {name: f"{args.root}/gold/{name.split('.')[1]}" for name in
             ("gold.live_flights", "gold.anomalies", "gold.window_stats", "gold.country_counts")}
    for name, path in paths.items():
        part = ["event_date"] if name == "gold.anomalies" else None
        write_deltalake(path, to_arrow(name, []), mode="overwrite", partition_by=part,
                        configuration={"delta.checkpointInterval": str(checkpoint_interval(name))})
    started = time.monotonic()
    anomaly_names = arrow_schema("gold.anomalies").names
    for version in range(1, args.versions):
        live = live_batch(state, version, n)
        write_deltalake(paths["gold.live_flights"],
                        pa.Table.from_pandas(live, schema=arrow_schema("gold.live_flights"), preserve_index=False),
                        mode="overwrite")
        flagged = live[live.is_anomaly].assign(detected_at=live.event_time, event_date=live.event_time.dt.date)
        write_deltalake(paths["gold.anomalies"],
                        pa.Table.from_pandas(flagged[anomaly_names], schema=arrow_schema("gold.anomalies"),
                                             preserve_index=False), mode="append", partition_by=["event_date"])
        if version % 12 == 0:
            start = T0 + timedelta(minutes=2 * (version // 12 - 1))
            air = live[~live.on_ground]
            write_deltalake(paths["gold.window_stats"], to_arrow("gold.window_stats", [{
                "window_start": start, "window_end": start + timedelta(minutes=2), "aircraft": len(live),
                "airborne": len(air), "position_reports": 12 * len(live), "avg_velocity": live.velocity.mean(),
                "avg_vertical_rate": live.vertical_rate.mean(), "avg_baro_altitude": live.baro_altitude.mean(),
                "anomalies": int(live.is_anomaly.sum())}]), mode="append")
            per = live.groupby("origin_country").agg(aircraft=("icao24", "count"), airborne=("on_ground", lambda s: int((~s).sum())),
                                                      avg_velocity=("velocity", "mean"), avg_baro_altitude=("baro_altitude", "mean"))
            rows = [{"window_start": start, "window_end": start + timedelta(minutes=2), "origin_country": c,
                     "aircraft": int(r.aircraft), "airborne": int(r.airborne), "position_reports": 12 * int(r.aircraft),
                     "avg_velocity": r.avg_velocity, "avg_baro_altitude": r.avg_baro_altitude} for c, r in per.iterrows()]
            write_deltalake(paths["gold.country_counts"], to_arrow("gold.country_counts", rows), mode="append")
        if version % 100 == 0:
            print(f"{version}/{args.versions} versions, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(f"wrote {args.versions} versions of gold.live_flights x {n} aircraft under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
