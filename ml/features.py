"""The one feature function, shared by training (pandas) and scoring (inside the pandas UDF).

Input contract: a pandas DataFrame with the ``silver.flights`` state columns of
:data:`STATE_COLUMNS` plus the aircraft's PREVIOUS state, :data:`PREV_COLUMNS`:

- ``prev_event_time``: event time of the same aircraft's state just before this one (null when
  none is known);
- ``prev_latitude``, ``prev_longitude`` (degrees), ``prev_baro_altitude`` (m), ``prev_velocity``
  (m/s), ``prev_true_track`` (degrees), ``prev_on_ground``: that state's values, null when
  unknown.

Training builds them with :func:`add_previous_state` (per ``icao24`` ordered by ``event_time``);
the gold job builds the same thing across micro-batches. A previous state older than
:data:`PREV_MAX_GAP_S` is ignored (kinematics over a long gap say nothing), the same way in
both paths because it happens here.

Output: :func:`build_features` returns the float columns of :data:`FEATURES` with NaN where a
value is unknown, never a made-up zero. The last five, :data:`CHECKS`, are what the model
(``ml.detector``) scores: how far the state is from what its own fields and the previous state
say, each >= 0 and log-compressed. :func:`feature_matrix` then fills each NaN with the
training median stored in the artefact; the ``*_missing``/``has_prev`` indicator columns keep
"unknown" visible to the model. Units: metres, m/s, degrees, seconds (OpenSky, SI).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from lakehouse.records import PREV_COLUMNS

EARTH_RADIUS_M = 6_371_000.0
# Kinematics from a previous state further back than this are not used (has_prev = 0).
PREV_MAX_GAP_S = 300.0
# Below this distance from the previous position, the course over ground is noise.
COURSE_MIN_DISTANCE_M = 1_000.0
# Scale height of sqrt(air density): TAS ~ EAS * exp(h / 17 km) in the troposphere, so
# velocity * exp(-h / 17 km) approximates the equivalent airspeed (wind ignored).
EAS_SCALE_HEIGHT_M = 17_000.0

STATE_COLUMNS: tuple[str, ...] = (
    "icao24", "event_time", "latitude", "longitude", "baro_altitude", "on_ground", "velocity",
    "true_track", "vertical_rate", "geo_altitude",
)
INPUT_COLUMNS: tuple[str, ...] = STATE_COLUMNS + PREV_COLUMNS

FEATURES: tuple[str, ...] = (
    # the state itself
    "baro_altitude", "velocity", "vertical_rate", "track_sin", "track_cos",
    "pos_x", "pos_y", "pos_z", "on_ground",
    # consistency of the state with itself
    "equivalent_airspeed",
    # consistency with the previous state
    "implied_speed_log_ratio", "altitude_rate", "vertical_rate_residual", "acceleration",
    "course_deviation",
    # what is unknown
    "has_prev", "altitude_missing", "velocity_missing", "vertical_rate_missing", "track_missing",
    # GNSS minus barometric altitude (weather moves it by tens to a few hundred metres)
    "geo_baro_difference",
    # the consistency checks (CHECKS)
    "speed_excess", "altitude_vs_vertical_rate", "geo_vs_baro", "track_vs_course", "speed_change",
)
# Each check: >= 0, 0 when the state is what its fields and the previous state imply, NaN when it
# cannot be checked. Log-compressed, so a decoding glitch of 10,000 m weighs little more than a
# step of 500 m and the model's scale for each check is set by ordinary traffic.
CHECKS: tuple[str, ...] = FEATURES[-5:]
# What each check means, for a person reading an alarm.
CHECK_REASONS = {
    "speed_excess": "moved farther than its ground speed allows",
    "altitude_vs_vertical_rate": "altitude change does not match its vertical rate",
    "geo_vs_baro": "GNSS and barometric altitude disagree",
    "track_vs_course": "track does not match the course flown",
    "speed_change": "ground speed changed faster than an aircraft can",
}


def _seconds(values: pd.Series) -> np.ndarray:
    """Epoch seconds (float, NaN for null) of a datetime-like Series, naive values read as UTC."""
    ts = pd.to_datetime(values, utc=True).dt.tz_localize(None).to_numpy()  # datetime64, NaT for null
    seconds = ts.view("int64") / float(np.timedelta64(1, "s") // np.timedelta64(1, np.datetime_data(ts.dtype)[0]))
    seconds[np.isnat(ts)] = np.nan
    return seconds


def _num(df: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def haversine_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def bearing_deg(lat1, lon1, lat2, lon2) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lon2 - lon1)
    x = np.sin(dl) * np.cos(p2)
    y = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return (np.degrees(np.arctan2(x, y)) + 360.0) % 360.0


def bearing_mean(a, b) -> np.ndarray:
    """The bearing halfway between bearings ``a`` and ``b`` (degrees), across north too."""
    return (a + ((b - a + 180.0) % 360.0 - 180.0) / 2.0) % 360.0


def check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"feature input lacks column(s) {', '.join(missing)}: the ML step needs the silver state "
            f"columns and the previous state {', '.join(PREV_COLUMNS)} (see ml.features)"
        )


def build_features(df: pd.DataFrame) -> pd.DataFrame:
    """State rows (+ previous state) -> :data:`FEATURES` as float64, NaN where unknown."""
    columns = feature_columns(df)
    out = pd.DataFrame({name: columns[name] for name in FEATURES}, index=df.index)
    return out.replace([np.inf, -np.inf], np.nan)


def feature_columns(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """:func:`build_features` as one float64 array per feature, before infinities become NaN
    (no frame built around them)."""
    check_columns(df)
    with np.errstate(invalid="ignore", divide="ignore"):
        lat, lon = _num(df, "latitude"), _num(df, "longitude")
        alt, vel = _num(df, "baro_altitude"), _num(df, "velocity")
        vrate, track = _num(df, "vertical_rate"), _num(df, "true_track")
        ground = pd.array(df["on_ground"], dtype="boolean").to_numpy(dtype=float, na_value=np.nan)

        t, t_prev = _seconds(df["event_time"]), _seconds(df["prev_event_time"])
        p_lat, p_lon = _num(df, "prev_latitude"), _num(df, "prev_longitude")
        p_alt, p_vel = _num(df, "prev_baro_altitude"), _num(df, "prev_velocity")
        p_track, geo = _num(df, "prev_true_track"), _num(df, "geo_altitude")
        p_ground = pd.array(df["prev_on_ground"], dtype="boolean").to_numpy(dtype=float, na_value=np.nan)
        dt = t - t_prev
        has_prev = (dt > 0) & (dt <= PREV_MAX_GAP_S) & np.isfinite(p_lat) & np.isfinite(p_lon)
        dt = np.where(has_prev, dt, np.nan)

        rlat, rlon, rtrack = np.radians(lat), np.radians(lon), np.radians(track)
        distance = haversine_m(p_lat, p_lon, lat, lon)
        implied = np.where(has_prev, distance / dt, np.nan)
        course = bearing_deg(p_lat, p_lon, lat, lon)
        deviation = np.abs((course - track + 180.0) % 360.0 - 180.0)
        altitude_rate = (alt - p_alt) / dt
        implied_ratio = np.log((implied + 10.0) / (vel + 10.0))
        airborne_both = (ground == 0.0) & (p_ground == 0.0)
        # the course flown between two reports is the mean of the tracks at both ends in a steady
        # turn; without a previous track, the current one
        mean_track = np.where(np.isfinite(p_track), bearing_mean(p_track, track), track)
        course_off = np.abs((course - mean_track + 180.0) % 360.0 - 180.0)

        out = {
            "baro_altitude": alt,
            "velocity": vel,
            "vertical_rate": vrate,
            "track_sin": np.sin(rtrack),
            "track_cos": np.cos(rtrack),
            # position on the unit sphere: no seam at +-180 degrees, no pole distortion
            "pos_x": np.cos(rlat) * np.cos(rlon),
            "pos_y": np.cos(rlat) * np.sin(rlon),
            "pos_z": np.sin(rlat),
            "on_ground": ground,
            "equivalent_airspeed": vel * np.exp(-np.maximum(alt, 0.0) / EAS_SCALE_HEIGHT_M),
            # +10 m/s keeps the ratio finite for parked aircraft; > 0: moved faster than it says
            "implied_speed_log_ratio": implied_ratio,
            "altitude_rate": altitude_rate,
            "vertical_rate_residual": altitude_rate - vrate,
            "acceleration": (vel - p_vel) / dt,
            "course_deviation": np.where(distance >= COURSE_MIN_DISTANCE_M, deviation, np.nan),
            "has_prev": has_prev.astype(float),
            "altitude_missing": np.isnan(alt).astype(float),
            "velocity_missing": np.isnan(vel).astype(float),
            "vertical_rate_missing": np.isnan(vrate).astype(float),
            "track_missing": np.isnan(track).astype(float),
            "geo_baro_difference": geo - alt,
            # flown faster than reported (the other way round is a position that did not update)
            "speed_excess": np.where(airborne_both, np.log1p(10.0 * np.maximum(implied_ratio, 0.0)), np.nan),
            "altitude_vs_vertical_rate": np.where(airborne_both, np.log1p(np.abs(altitude_rate - vrate)), np.nan),
            "geo_vs_baro": np.where(ground == 0.0, np.log1p(np.abs(geo - alt) / 10.0), np.nan),
            "track_vs_course": np.where(distance >= COURSE_MIN_DISTANCE_M, np.log1p(course_off), np.nan),
            # a take-off or landing between two reports is not an acceleration
            "speed_change": np.where(airborne_both, np.log1p(np.abs(vel - p_vel) / dt), np.nan),
        }
    return out


def _groups(features: pd.DataFrame) -> dict[str, np.ndarray]:
    ground = (features["on_ground"] == 1.0).to_numpy()
    return {"airborne": ~ground, "ground": ground}


def imputation_medians(features: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Training medians per feature, separately for airborne and on-ground states.

    An unknown altitude on the ground is imputed from other ground states, not from cruising
    aircraft. A feature never known in a group takes the overall median (0.0 if never known).
    """
    overall = features.median(skipna=True)
    medians = {}
    for group, mask in _groups(features).items():
        part = features[mask].median(skipna=True) if mask.any() else overall
        medians[group] = {
            name: float(part[name]) if np.isfinite(part[name])
            else (float(overall[name]) if np.isfinite(overall[name]) else 0.0)
            for name in FEATURES
        }
    return medians


def impute(features: pd.DataFrame, medians: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """NaN -> the stored median of the state's group (airborne / ground); float64 matrix."""
    return _imputed({name: features[name].to_numpy(dtype=np.float64, na_value=np.nan) for name in FEATURES}, medians)


def _imputed(columns: Mapping[str, np.ndarray], medians: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """Rows x :data:`FEATURES` (column-major), each NaN or infinity the median of its row's
    group (as :func:`build_features` then :func:`impute`)."""
    ground = columns["on_ground"] == 1.0
    groups = [(medians["airborne"], ~ground), (medians["ground"], ground)]
    matrix = np.empty((len(ground), len(FEATURES)), dtype=np.float64, order="F")
    for j, name in enumerate(FEATURES):
        values = matrix[:, j]
        values[:] = columns[name]
        unknown = ~np.isfinite(values)
        if unknown.any():
            for group, mask in groups:
                values[unknown & mask] = group[name]
    return matrix


def feature_matrix(df: pd.DataFrame, medians: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """The model input: :func:`build_features` with NaN replaced by the stored training medians
    (computed as arrays, without the frame: the scoring UDF calls it on every Arrow batch)."""
    return _imputed(feature_columns(df), medians)


def add_previous_state(df: pd.DataFrame) -> pd.DataFrame:
    """Add :data:`PREV_COLUMNS`: per ``icao24``, the state just before in ``event_time``.

    Rows are returned in (icao24, event_time) order. Used by training and evaluation; the gold
    job computes the same columns in Spark across micro-batches.
    """
    out = df.sort_values(["icao24", "event_time"], kind="mergesort").reset_index(drop=True)
    grouped = out.groupby("icao24", sort=False)
    for column in (c.removeprefix("prev_") for c in PREV_COLUMNS):
        out[f"prev_{column}"] = grouped[column].shift(1)
    return out
