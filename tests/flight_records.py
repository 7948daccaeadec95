"""Hand-built Kafka records in the ARCHITECTURE format, for silver and gold tests.

``state(...)`` is one state vector as the producer sends it (OpenSky field names and units);
``record(...)`` the ``(key, value)`` pair that ``tests.helpers.produce`` sends; ``track(...)``
a straight flight reporting every ``step`` seconds.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

T0 = 1_700_000_040  # 2023-11-14 22:14:00 UTC, a 2-minute window boundary


def state(icao24: str = "3c6444", t: int = T0, lat: float = 50.0, lon: float = 8.5, **fields) -> dict:
    value = {
        "icao24": icao24, "callsign": "DLH9U   ", "origin_country": "Germany", "time_position": t,
        "last_contact": t + 1, "longitude": lon, "latitude": lat, "baro_altitude": 10000.0,
        "on_ground": False, "velocity": 230.0, "true_track": 90.0, "vertical_rate": 0.0,
        "sensors": None, "geo_altitude": 10100.0, "squawk": "1000", "spi": False,
        "position_source": 0, "category": 1, "schema_version": 1, "snapshot_time": t + 5,
        "source": "replay", "produced_at": (t + 6) * 1000,
    }
    value.update(fields)
    return value


def record(**kw) -> tuple[str, str]:
    value = state(**kw)
    return str(value["icao24"]), json.dumps(value)


def track(icao24: str, t0: int, n: int, step: int = 10, lat: float = 50.0, lon: float = 8.5,
          velocity: float = 230.0, heading_deg: float = 90.0, **fields) -> list[dict]:
    """``n`` states of an aircraft flying straight at ``velocity`` m/s from (lat, lon)."""
    out = []
    for i in range(n):
        dist = velocity * step * i
        dlat = dist * math.cos(math.radians(heading_deg)) / 111_195.0
        dlon = dist * math.sin(math.radians(heading_deg)) / (111_195.0 * math.cos(math.radians(lat)))
        out.append(state(icao24, t0 + i * step, lat + dlat, lon + dlon, velocity=velocity,
                         true_track=heading_deg, **fields))
    return out


def as_records(states: list[dict]) -> list[tuple[str, str]]:
    return [(str(s["icao24"]), json.dumps(s)) for s in states]


# The columns of a bronze row that silver reads, for pure-transform tests (no Kafka).
BRONZE_DDL = "value binary, topic string, partition int, offset bigint, kafka_timestamp timestamp"


def bronze_rows(values: list, appended: datetime | None = None) -> list[tuple]:
    """``values`` (text, UTF-8 encoded, or bytes) as bronze rows at offsets 0..n-1 of partition 0, appended to Kafka at
    ``appended`` (default: now; the records here are from 2023, well before it)."""
    at = appended or datetime.now(timezone.utc)
    return [(v.encode() if isinstance(v, str) else v, "t", 0, i, at) for i, v in enumerate(values)]
