"""An independent pandas computation of gold from a list of good state records, to compare the
Spark job against. Written from ARCHITECTURE.md and conf/default.yaml, not from the Spark code."""

from __future__ import annotations

import numpy as np
import pandas as pd

WINDOW_S = 120


def frame(states: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(states)
    df["icao24"] = df["icao24"].str.lower()
    df = df.drop_duplicates(["icao24", "time_position"], keep="first")
    return df.sort_values(["icao24", "time_position"]).reset_index(drop=True)


def rules(df: pd.DataFrame, cfg) -> pd.Series:
    """Names of the rules that fire on each state, in the documented order."""
    airborne = df["on_ground"].eq(False)
    prev = df.groupby("icao24")[["time_position", "latitude", "longitude", "velocity"]].shift(1)
    lat1, lat2 = np.radians(prev["latitude"]), np.radians(df["latitude"])
    dlat, dlon = lat2 - lat1, np.radians(df["longitude"] - prev["longitude"])
    a = np.sin(dlat / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(dlon / 2) ** 2
    dist = 2 * 6_371_000.0 * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    dt = df["time_position"] - prev["time_position"]
    implied = (dist / dt).where(dt > 0)
    reported = np.fmax(df["velocity"], prev["velocity"])  # NaN when neither is known: no jump
    fired = {
        "emergency_squawk": df["squawk"].isin(cfg.squawk_codes),
        "rapid_descent": airborne & (df["vertical_rate"] < cfg.rapid_descent_ms),
        "extreme_speed": df["velocity"] > cfg.extreme_speed_ms,
        "position_jump": (implied > reported * cfg.position_jump_factor)
        & (implied - reported > cfg.position_jump_min_excess_ms),
        "low_altitude": airborne & (df["baro_altitude"] < cfg.low_altitude_m)
        & (df["velocity"] > cfg.low_altitude_min_speed_ms),
    }
    names = pd.DataFrame({k: v.fillna(False).astype(bool) for k, v in fired.items()})
    return names.apply(lambda row: [k for k in fired if row[k]], axis=1)


def closed_windows(df: pd.DataFrame, watermark_s: int = 120):
    """(window_stats, country_counts) of the windows closed by the newest event time."""
    df = df.assign(window_start=df["time_position"] // WINDOW_S * WINDOW_S)
    newest = df["time_position"].max()
    df = df[df["window_start"] + WINDOW_S <= newest - watermark_s]
    air = df.assign(air_icao=df["icao24"].where(df["on_ground"].eq(False)),
                    anom_icao=df["icao24"].where(df["rules"].str.len() > 0),
                    origin_country=df["origin_country"].fillna("unknown"))
    stats = air.groupby("window_start").agg(
        aircraft=("icao24", "nunique"), airborne=("air_icao", "nunique"), position_reports=("icao24", "size"),
        avg_velocity=("velocity", "mean"), avg_vertical_rate=("vertical_rate", "mean"),
        avg_baro_altitude=("baro_altitude", "mean"), anomalies=("anom_icao", "nunique")).reset_index()
    countries = air.groupby(["window_start", "origin_country"]).agg(
        aircraft=("icao24", "nunique"), airborne=("air_icao", "nunique"), position_reports=("icao24", "size"),
        avg_velocity=("velocity", "mean"), avg_baro_altitude=("baro_altitude", "mean")).reset_index()
    return stats, countries


def live_flights(df: pd.DataFrame, live_window_s: int = 300) -> pd.DataFrame:
    newest = df["time_position"].max()
    latest = df.sort_values("time_position").groupby("icao24").tail(1)
    return latest[latest["time_position"] >= newest - live_window_s].sort_values("icao24").reset_index(drop=True)
