"""Labelled evaluation data as silver-like pandas frames (no Kafka or Spark needed).

- :func:`simulated_run`: ``ingestion.simulator`` traffic with injected anomalies and their labels;
- :func:`replay_states`: real recorded tracks (replay files, e.g. the traffic samples), assumed
  clean;
- :func:`to_silver_frame`: Kafka records -> the rows silver.flights would hold for them (typed,
  ``event_time`` from ``time_position``, validation bounds applied, one row per
  (icao24, event_time)), so evaluation sees what training and the gold job see.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from lakehouse.settings import Settings
from ml.features import add_previous_state

log = logging.getLogger(__name__)

SILVER_COLUMNS = (
    "icao24", "callsign", "origin_country", "time_position", "event_time", "longitude", "latitude",
    "baro_altitude", "on_ground", "velocity", "true_track", "vertical_rate", "geo_altitude", "squawk",
)


def to_silver_frame(records: list[dict], settings: Settings) -> pd.DataFrame:
    """Kafka records (dicts of ARCHITECTURE.md) -> silver-like rows, bounds of ``validation``."""
    frame = pd.DataFrame.from_records(records, columns=list(SILVER_COLUMNS[:3]) + list(SILVER_COLUMNS[5:])
                                      + ["time_position"])
    v = settings.validation
    for name in ("longitude", "latitude", "baro_altitude", "velocity", "true_track", "vertical_rate",
                 "geo_altitude"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    frame["on_ground"] = frame["on_ground"].astype("boolean")
    frame["callsign"] = frame["callsign"].str.strip().replace("", None)
    keep = (
        frame["icao24"].astype(str).str.fullmatch(r"[0-9a-f]{6}")
        & frame["time_position"].notna()
        & frame["latitude"].between(-90, 90) & frame["longitude"].between(-180, 180)
        & (frame["baro_altitude"].isna() | frame["baro_altitude"].between(v.baro_altitude_min_m, v.baro_altitude_max_m))
        & (frame["velocity"].isna() | frame["velocity"].between(v.velocity_min_ms, v.velocity_max_ms))
        & (frame["vertical_rate"].isna()
           | frame["vertical_rate"].between(v.vertical_rate_min_ms, v.vertical_rate_max_ms))
    )
    dropped = int((~keep).sum())
    if dropped:
        log.info("%d of %d records outside the validation bounds (silver would quarantine them)",
                 dropped, len(frame))
    frame = frame[keep].copy()
    frame["time_position"] = frame["time_position"].astype("int64")
    frame["event_time"] = pd.to_datetime(frame["time_position"], unit="s", utc=True)
    frame = frame.drop_duplicates(["icao24", "event_time"], keep="first")
    return frame[list(SILVER_COLUMNS)].reset_index(drop=True)


def simulated_run(settings: Settings, seed: int, aircraft: int, snapshots: int, anomaly_rate: float,
                  kinds: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(states with previous state, labels ``icao24, time_position, kind``) of one simulator run
    injecting ``kinds`` (default the simulator's: the kinds a rule names)."""
    from ingestion.simulator import RULE_KINDS, Simulator
    from ingestion.states import response_to_records

    sim = Simulator(seed=seed, aircraft=aircraft, anomaly_rate=anomaly_rate,
                    interval_s=settings.simulator.interval_s, kinds=kinds or RULE_KINDS)
    records: list[dict] = []
    for response in sim.snapshots(snapshots):
        records.extend(response_to_records(response, "simulator", 0))
    labels = pd.DataFrame([(lb.icao24, lb.time_position, lb.kind) for lb in sim.labels],
                          columns=["icao24", "time_position", "kind"])
    return add_previous_state(to_silver_frame(records, settings)), labels


def replay_states(settings: Settings, paths) -> pd.DataFrame:
    """Real recorded tracks (replay files) as silver-like rows with their previous state."""
    from ingestion.replay import read_replay
    from ingestion.states import response_to_records

    records: list[dict] = []
    for response in read_replay(paths):
        records.extend(response_to_records(response, "replay", 0))
    return add_previous_state(to_silver_frame(records, settings))


def attach_labels(states: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Add ``kind`` (null = normal) and ``after_anomaly``: the state right after a labelled one.

    A one-report glitch (position jump, altitude drop, speed spike) makes two transitions
    strange: into the glitch and back out of it. The second state is not labelled by the
    simulator but is not a normal state either; the metrics count it apart.
    """
    # a label names (aircraft, time_position); one per state (the first kind if several)
    kinds = labels.drop_duplicates(["icao24", "time_position"]).set_index(["icao24", "time_position"])["kind"]
    keys = pd.MultiIndex.from_arrays([states["icao24"], states["time_position"]])
    out = states.copy()
    out["kind"] = kinds.reindex(keys).to_numpy()
    previous = out.groupby("icao24", sort=False)["kind"].shift(1)
    out["after_anomaly"] = out["kind"].isna() & previous.notna()
    return out


def split_by_time(states: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(earlier ``fraction`` of the time span, the rest); previous states stay attached."""
    t = states["event_time"]
    cut = t.min() + (t.max() - t.min()) * fraction
    early = np.asarray(t <= cut)
    return states[early].reset_index(drop=True), states[~early].reset_index(drop=True)
