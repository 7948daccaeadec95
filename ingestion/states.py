"""The OpenSky state vector: positional array -> named Kafka record.

The field names and their order (``STATE_FIELDS``, ``RECORD_FIELDS``) are defined once, in
``lakehouse.records``.

``response_to_records(response, source, produced_at_ms)`` turns one ``/states/all`` response
into the Kafka records of ARCHITECTURE.md: the OpenSky field names with values passed through
unchanged, plus ``schema_version``, ``snapshot_time`` (the response's ``time``), ``source`` and
``produced_at``. Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Any

from lakehouse.records import MIN_STATE_FIELDS, SCHEMA_VERSION, SOURCES, STATE_FIELDS


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
