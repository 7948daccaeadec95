"""A small, known gold lakehouse written with delta-rs, for the dashboard tests.

The frames match the catalog schemas exactly (``arrow_schema`` turns the catalog's Spark DDL
into Arrow). ``build_gold`` writes the tables the way the gold job does, one micro-batch after
another: every batch overwrites ``gold.live_flights`` (a new version: the sky at that moment),
then appends the batch's flagged states to ``gold.anomalies`` and its closed windows to
``gold.window_stats`` / ``gold.country_counts``. The expected KPIs of each version are written
out by hand in ``EXPECTED`` so that a test compares the page against numbers, not against the
code under test.

The aircraft and countries are invented; positions are over western Europe.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa

from lakehouse.catalog import _split_ddl, table, table_path
from lakehouse.delta_rs import delta_uri, storage_options

_PRIMITIVES = {
    "string": pa.string(),
    "binary": pa.binary(),
    "bigint": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


def _arrow_type(ddl_type: str) -> pa.DataType:
    match = re.fullmatch(r"array<(\w+)>", ddl_type.strip())
    if match:
        return pa.list_(_PRIMITIVES[match.group(1)])
    return _PRIMITIVES[ddl_type.strip()]


def arrow_schema(name: str) -> pa.Schema:
    """The catalog schema of ``name`` as Arrow (Spark ``timestamp`` = UTC microseconds)."""
    fields = []
    for col in _split_ddl(table(name).schema):
        col_name, col_type = col.split(" ", 1)
        fields.append(pa.field(col_name, _arrow_type(col_type)))
    return pa.schema(fields)


def to_arrow(name: str, rows: list[dict]) -> pa.Table:
    """Rows (dicts; missing columns are null) as an Arrow table with the catalog schema."""
    schema = arrow_schema(name)
    frame = pd.DataFrame(rows, columns=schema.names)
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


# icao24 -> (callsign, origin_country)
AIRCRAFT = {
    "4ca1d3": ("EIN123", "Ireland"),
    "3c6444": ("DLH9AB", "Germany"),
    "a0b1c2": ("UAL77", "United States"),
    "400abc": ("BAW12", "United Kingdom"),
    "c0ffee": ("ACA870", "Canada"),
    "e48d4f": ("TAM3344", "Brazil"),
}

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
BATCH_SECONDS = 10

# Membership of gold.live_flights per version after the empty version 0 created by the job:
# icao24 -> (on_ground, baro_altitude m, velocity m/s, rules, ml_anomaly). Round numbers so that
# the averages below are exact.
_NORMAL = ()
VERSIONS: list[dict[str, tuple]] = [
    {},  # version 0: the table as created, empty
    {  # version 1
        "4ca1d3": (False, 10000.0, 230.0, _NORMAL, False),
        "3c6444": (False, 8000.0, 210.0, _NORMAL, False),
        "a0b1c2": (True, 0.0, 5.0, _NORMAL, False),
    },
    {  # version 2: two more; c0ffee squawks 7700
        "4ca1d3": (False, 10000.0, 230.0, _NORMAL, False),
        "3c6444": (False, 8000.0, 210.0, _NORMAL, False),
        "a0b1c2": (True, 0.0, 5.0, _NORMAL, False),
        "400abc": (False, 11000.0, 240.0, _NORMAL, False),
        "c0ffee": (False, 9000.0, 220.0, ("emergency_squawk",), False),
    },
    {  # version 3: 4ca1d3 left the live window, a0b1c2 took off, e48d4f is an ML anomaly
        "3c6444": (False, 8000.0, 210.0, _NORMAL, False),
        "a0b1c2": (False, 1000.0, 120.0, _NORMAL, False),
        "400abc": (False, 11000.0, 240.0, _NORMAL, False),
        "c0ffee": (False, 6000.0, 200.0, ("emergency_squawk", "rapid_descent"), False),
        "e48d4f": (False, 12000.0, 430.0, ("extreme_speed",), True),
    },
]
# Versions 4..11: the same five aircraft moving on, c0ffee still in distress (so that the
# slider has room, play has something to show and c0ffee leaves a trail).
for _ in range(8):
    VERSIONS.append(dict(VERSIONS[3]))

# Page KPIs per version: live aircraft, airborne, anomalies, mean altitude and mean speed of
# the airborne aircraft (m, m/s).
EXPECTED = {
    0: {"live": 0, "airborne": 0, "anomalies": 0, "altitude": None, "speed": None},
    1: {"live": 3, "airborne": 2, "anomalies": 0, "altitude": 9000.0, "speed": 220.0},
    2: {"live": 5, "airborne": 4, "anomalies": 1, "altitude": 9500.0, "speed": 225.0},
    3: {"live": 5, "airborne": 5, "anomalies": 2, "altitude": 7600.0, "speed": 240.0},
}
LATEST = len(VERSIONS) - 1
EXPECTED[LATEST] = EXPECTED[3]


def position(icao24: str, version: int) -> tuple[float, float, float]:
    """(longitude, latitude, true_track) of an aircraft at a version: a straight track east."""
    index = list(AIRCRAFT).index(icao24)
    return (-8.0 + index * 3.0 + version * 0.05, 45.0 + index * 1.5, 80.0 + index * 10)


def event_time(version: int) -> datetime:
    return T0 + timedelta(seconds=BATCH_SECONDS * version)


ML_REASON = "track does not match the course flown"


def live_rows(version: int) -> list[dict]:
    rows = []
    for icao24, (on_ground, alt, speed, rules, ml) in VERSIONS[version].items():
        callsign, country = AIRCRAFT[icao24]
        lon, lat, track = position(icao24, version)
        t = event_time(version)
        rows.append({
            "icao24": icao24, "callsign": callsign, "origin_country": country,
            "time_position": int(t.timestamp()), "event_time": t, "last_contact": t,
            "longitude": lon, "latitude": lat, "baro_altitude": alt, "on_ground": on_ground,
            "velocity": speed, "true_track": track,
            "vertical_rate": -20.0 if "rapid_descent" in rules else 0.0,
            "sensors": None, "geo_altitude": alt, "squawk": "7700" if "emergency_squawk" in rules else "1000",
            "spi": False, "position_source": 0, "category": 0,
            "rules": list(rules), "rule_anomaly": bool(rules), "anomaly_score": 0.9 if ml else 0.2,
            "ml_anomaly": ml, "is_anomaly": bool(rules) or ml, "model_version": "v1",
            "updated_at": t, "ml_reason": ML_REASON if ml else None,
        })
    return rows


def anomaly_rows(version: int) -> list[dict]:
    return [
        {**{k: r[k] for k in r if k in arrow_schema("gold.anomalies").names},
         "detected_at": r["event_time"], "event_date": r["event_time"].date()}
        for r in live_rows(version)
        if r["is_anomaly"]
    ]


def window_rows(version: int) -> tuple[list[dict], list[dict]]:
    """The 2-minute window that closes with this batch (one per 4 batches), all traffic."""
    if version == 0 or version % 4:
        return [], []
    start = T0 + timedelta(minutes=2 * (version // 4 - 1))
    live = live_rows(version)
    air = [r for r in live if not r["on_ground"]]
    stats = [{
        "window_start": start, "window_end": start + timedelta(minutes=2), "aircraft": len(live),
        "airborne": len(air), "position_reports": 12 * len(live),
        "avg_velocity": sum(r["velocity"] for r in live) / len(live),
        "avg_vertical_rate": sum(r["vertical_rate"] for r in live) / len(live),
        "avg_baro_altitude": sum(r["baro_altitude"] for r in live) / len(live),
        "anomalies": sum(r["is_anomaly"] for r in live),
    }]
    countries = [{
        "window_start": start, "window_end": start + timedelta(minutes=2),
        "origin_country": r["origin_country"], "aircraft": 1, "airborne": int(not r["on_ground"]),
        "position_reports": 12, "avg_velocity": r["velocity"], "avg_baro_altitude": r["baro_altitude"],
    } for r in live]
    return stats, countries


def build_gold(settings, versions: int | None = None, start: int = 0) -> dict[str, str]:
    """Write the known gold tables under ``settings.storage.root``; return name -> path.

    Writes the batches of live_flights versions ``start`` .. ``versions - 1`` (default: all of
    VERSIONS); ``start=0`` also creates the empty tables, a later ``start`` goes on from there.
    """
    from deltalake import write_deltalake

    opts = storage_options(settings)
    names = ("gold.live_flights", "gold.anomalies", "gold.window_stats", "gold.country_counts")
    paths = {name: delta_uri(table_path(settings, name)) for name in names}
    if start == 0:
        for name in names:  # the job creates every table empty first (version 0)
            write_deltalake(paths[name], to_arrow(name, []), mode="overwrite", storage_options=opts,
                            partition_by=list(table(name).partition_by) or None)
    for version in range(max(start, 1), len(VERSIONS) if versions is None else versions):
        write_deltalake(paths["gold.live_flights"], to_arrow("gold.live_flights", live_rows(version)),
                        mode="overwrite", storage_options=opts)
        anomalies = anomaly_rows(version)
        if anomalies:
            write_deltalake(paths["gold.anomalies"], to_arrow("gold.anomalies", anomalies),
                            mode="append", storage_options=opts, partition_by=["event_date"])
        stats, countries = window_rows(version)
        if stats:
            write_deltalake(paths["gold.window_stats"], to_arrow("gold.window_stats", stats),
                            mode="append", storage_options=opts)
            write_deltalake(paths["gold.country_counts"], to_arrow("gold.country_counts", countries),
                            mode="append", storage_options=opts)
    return paths


def silver_rows() -> list[dict]:
    """silver.flights: every state the live versions saw, once per (icao24, event_time)."""
    rows, offset = [], 0
    for version in range(1, len(VERSIONS)):
        for r in live_rows(version):
            offset += 1
            rows.append({**{k: r[k] for k in arrow_schema("silver.flights").names if k in r},
                         "schema_version": 1, "snapshot_time": r["event_time"], "source": "replay",
                         "produced_at": r["event_time"], "partition": 0, "offset": offset,
                         "processed_at": r["event_time"], "event_date": r["event_time"].date()})
    return rows


def quarantine_rows() -> list[dict]:
    bad = [("not json", "malformed_json"), ('{"icao24": "zz"}', "invalid_icao24"),
           ('{"icao24": "abcdef", "time_position": null}', "no_position")]
    return [{"value": value.encode(), "value_text": value, "topic": "opensky.states", "partition": 0, "offset": 1000 + i, "reason": reason,
             "detail": f"test record {i}", "quarantined_at": T0} for i, (value, reason) in enumerate(bad)]


def bronze_rows() -> list[dict]:
    """As many raw records as silver + quarantine hold, plus two duplicates."""
    n = len(silver_rows()) + len(quarantine_rows()) + 2
    return [{"key": b"abcdef", "value": b"{}", "topic": "opensky.states", "partition": 0, "offset": i,
             "kafka_timestamp": T0, "ingested_at": T0, "ingest_date": T0.date()} for i in range(n)]
