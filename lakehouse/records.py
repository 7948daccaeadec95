"""The column vocabulary, defined once: the Kafka record of ARCHITECTURE.md (field names, their
order and JSON types) and the previous-state columns that gold adds and the model reads.

``STATE_FIELDS`` is the one place where the positional ``/api/states/all`` array is given names
(same order as OpenSky's official client: index 7 ``baro_altitude``, 13 ``geo_altitude``,
17 ``category``); ``RECORD_FIELDS`` adds what the producer writes beside them. Ingestion writes
records with these names, silver parses them with :data:`RECORD_TYPES`.
"""

from __future__ import annotations

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
# A field's position in the state array.
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(STATE_FIELDS)}

# Each record field's type, as Spark parses the JSON (times in epoch seconds, produced_at in
# epoch milliseconds; OpenSky's SI units).
RECORD_TYPES: dict[str, str] = {
    "icao24": "string", "callsign": "string", "origin_country": "string", "time_position": "long",
    "last_contact": "long", "longitude": "double", "latitude": "double", "baro_altitude": "double",
    "on_ground": "boolean", "velocity": "double", "true_track": "double", "vertical_rate": "double",
    "sensors": "array<int>", "geo_altitude": "double", "squawk": "string", "spi": "boolean",
    "position_source": "int", "category": "int", "schema_version": "int", "snapshot_time": "long",
    "source": "string", "produced_at": "long",
}
assert tuple(RECORD_TYPES) == RECORD_FIELDS

# What gold adds to each state from the same aircraft's state just before in event time
# (``lakehouse.transforms.gold.with_previous_state``), as ``prev_<column>``: the model's input
# beside the state itself (``ml.features.INPUT_COLUMNS``).
PREVIOUS_STATE: tuple[str, ...] = (
    "event_time", "latitude", "longitude", "baro_altitude", "velocity", "true_track", "on_ground",
)
PREV_COLUMNS: tuple[str, ...] = tuple(f"prev_{c}" for c in PREVIOUS_STATE)
