"""The OpenSky state vector: positional array -> named Kafka record.

``STATE_FIELDS`` is the one place where the positional ``/api/states/all`` array is given names
(same order as OpenSky's official client: index 7 ``baro_altitude``, 13 ``geo_altitude``,
17 ``category``). Everybody who needs the mapping imports it from here.

``response_to_records(response, source, produced_at_ms)`` turns one ``/states/all`` response
into the Kafka records of ARCHITECTURE.md: the OpenSky field names with values passed through
unchanged, plus ``schema_version``, ``snapshot_time`` (the response's ``time``), ``source`` and
``produced_at``. Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

# Position in the state array -> field name. Rows of 17 fields (no `category`, sent when the
# request has no `extended=1`) are normal and give category = None.
STATE_FIELDS: tuple[str, ...] = (
    "icao24",  # 0  str, 24-bit transponder address, hex
    "callsign",  # 1  str or None, 8 chars padded with spaces (kept as sent)
    "origin_country",  # 2  str, from the ICAO address allocation
    "time_position",  # 3  int epoch s of the last position, or None
    "last_contact",  # 4  int epoch s of the last message of any kind
    "longitude",  # 5  float degrees (WGS-84) or None
    "latitude",  # 6  float degrees (WGS-84) or None
    "baro_altitude",  # 7  float metres or None
    "on_ground",  # 8  bool
    "velocity",  # 9  float m/s over ground or None
    "true_track",  # 10 float degrees clockwise from north or None
    "vertical_rate",  # 11 float m/s, positive = climbing, or None
    "sensors",  # 12 list of receiver ids or None
    "geo_altitude",  # 13 float metres or None
    "squawk",  # 14 str or None
    "spi",  # 15 bool, special purpose indicator
    "position_source",  # 16 int: 0 ADS-B, 1 ASTERIX, 2 MLAT, 3 FLARM
    "category",  # 17 int aircraft category (extended=1 only)
)
MIN_STATE_FIELDS = 17
SOURCES = ("opensky", "replay", "simulator")
RECORD_FIELDS: tuple[str, ...] = (*STATE_FIELDS, "schema_version", "snapshot_time", "source", "produced_at")


class MalformedResponse(ValueError):
    """A ``/states/all`` body that is not ``{"time": int, "states": [[...], ...] | null}``."""


def check_response(response: Any) -> None:
    """Raise :class:`MalformedResponse` unless ``response`` has the shape of a states response."""
    if not isinstance(response, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(response).__name__}")
    snapshot = response.get("time")
    if isinstance(snapshot, bool) or not isinstance(snapshot, (int, float)):
        raise MalformedResponse(f"'time' must be a number, got {snapshot!r}")
    states = response.get("states")
    if states is None:
        return  # an empty sky (or an empty bounding box) is sent as null
    if not isinstance(states, list):
        raise MalformedResponse(f"'states' must be a list or null, got {type(states).__name__}")
    for i, row in enumerate(states):
        if not isinstance(row, list):
            raise MalformedResponse(f"states[{i}] must be an array, got {type(row).__name__}")
        if len(row) < MIN_STATE_FIELDS:
            raise MalformedResponse(f"states[{i}] has {len(row)} fields, expected 17 or 18")


def state_count(response: dict) -> int:
    return len(response.get("states") or ())


def state_to_dict(row: list) -> dict[str, Any]:
    """Name the fields of one state array (17 or 18 fields; values unchanged).

    Fields beyond the 18 known ones (a future API addition) are not part of record format
    version 1 and are left out rather than guessed at.
    """
    named = dict(zip(STATE_FIELDS, row, strict=False))
    named.setdefault("category", None)
    return named


def response_to_records(response: dict, source: str, produced_at_ms: int) -> list[dict[str, Any]]:
    """One Kafka record (a dict, in ``RECORD_FIELDS`` order) per state of ``response``.

    ``response``: a ``/states/all`` body (``{"time": ..., "states": [...] | null}``).
    ``source``: ``opensky``, ``replay`` or ``simulator``. ``produced_at_ms``: epoch milliseconds.
    Raises :class:`MalformedResponse` on a body of the wrong shape (nothing is half-converted).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    check_response(response)
    snapshot = response["time"]
    records = []
    for row in response.get("states") or ():
        record = state_to_dict(row)
        record["schema_version"] = SCHEMA_VERSION
        record["snapshot_time"] = snapshot
        record["source"] = source
        record["produced_at"] = produced_at_ms
        records.append(record)
    return records
