"""The one catalog of lakehouse tables: name -> path, checkpoint, keys, partitioning, schema.

Jobs, the dashboard, notebooks and tests look tables up here and nowhere else. A table
``layer.name`` lives at ``<storage.root>/<layer>/<name>``; the checkpoints of a job's streaming
query at ``<storage.root>/_checkpoints/<job>/<query>``. The schemas are the column contract of
ARCHITECTURE.md (Spark DDL); each transform ends with a ``select`` of exactly these columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from lakehouse.settings import Settings, join_path


@dataclass(frozen=True)
class Table:
    name: str
    partition_by: tuple[str, ...]
    keys: tuple[str, ...]
    schema: str
    description: str

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def internal(self) -> bool:
        """Bookkeeping of a job (``silver._dedup_stats``), not a table for users."""
        return self.short_name.startswith("_")

    def path(self, settings: Settings) -> str:
        return join_path(settings.storage.root, self.layer, self.short_name)

    @property
    def columns(self) -> list[str]:
        return [col.strip().split(" ", 1)[0] for col in _split_ddl(self.schema)]

    def ddl(self, without: tuple[str, ...] = ()) -> str:
        """The schema as a DDL column list, leaving out the columns ``without``."""
        return ", ".join(c for c in _split_ddl(self.schema) if c.split(" ", 1)[0] not in without)


def _split_ddl(ddl: str) -> list[str]:
    """Split a DDL column list on top-level commas (not those inside ``array<...>``)."""
    parts, depth, current = [], 0, []
    for ch in ddl:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


# The state vector as typed columns, SI units as OpenSky sends them (m, m/s, degrees).
_STATE_COLUMNS = """
    icao24 string, callsign string, origin_country string, time_position bigint,
    event_time timestamp, last_contact timestamp, longitude double, latitude double,
    baro_altitude double, on_ground boolean, velocity double, true_track double,
    vertical_rate double, sensors array<int>, geo_altitude double, squawk string, spi boolean,
    position_source int, category int
"""

# What gold computes per state: rule names, ML score, flags (the ML columns stay null until a
# model is scored).
_SCORED_COLUMNS = """, rules array<string>, rule_anomaly boolean, anomaly_score double,
    ml_anomaly boolean, is_anomaly boolean, model_version string"""

# Why the model flagged a state, in words (null when it did not). Added after the tables' first
# release, so last in each: lakehouse.table_setup.ADDED_COLUMNS adds it to older tables in place.
_EXPLAINED = ", ml_reason string"

# Which batch's state a row of gold._state belongs to (one more per batch; the newest generation
# is the state). Added after the table's first release: older rows read null.
_GENERATION = ", generation bigint"

# An open window's states of one aircraft (and origin country), summed: what the window tables
# need to be exact (distinct aircraft, reports, averages as sum / count) without keeping the states.
_WINDOW_PARTIAL_COLUMNS = """, window_start timestamp, window_end timestamp, reports bigint,
    airborne boolean, flagged boolean, velocity_sum double, velocity_n bigint,
    vertical_rate_sum double, vertical_rate_n bigint, baro_altitude_sum double, baro_altitude_n bigint"""

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            name="bronze.opensky_states",
            partition_by=("ingest_date",),
            keys=("topic", "partition", "offset"),
            schema="""key binary, value binary, topic string, partition int, offset bigint,
                kafka_timestamp timestamp, ingested_at timestamp, ingest_date date""",
            description="Raw Kafka records (key and value bytes as delivered) with their coordinates; "
            "append only, nothing parsed or dropped.",
        ),
        Table(
            name="silver.flights",
            partition_by=("event_date",),
            keys=("icao24", "event_time"),
            schema=_STATE_COLUMNS
            + """, schema_version int, snapshot_time timestamp, source string, produced_at timestamp,
                partition int, offset bigint, processed_at timestamp, event_date date""",
            description="Parsed, typed, validated state vectors; one row per (icao24, event_time).",
        ),
        Table(
            name="silver.quarantine",
            partition_by=(),
            keys=("partition", "offset"),
            schema="""value binary, value_text string, topic string, partition int, offset bigint,
                reason string, detail string, quarantined_at timestamp""",
            description="Every record rejected by the silver job: its bytes, their text (invalid UTF-8 "
            "replaced), a stable reason code.",
        ),
        Table(
            name="gold.live_flights",
            partition_by=(),
            keys=("icao24",),
            schema=_STATE_COLUMNS + _SCORED_COLUMNS + ", updated_at timestamp" + _EXPLAINED,
            description="Latest state of every aircraft seen within gold.live_window; rewritten each batch.",
        ),
        Table(
            name="gold.anomalies",
            partition_by=("event_date",),
            keys=("icao24", "event_time"),
            schema="""icao24 string, callsign string, origin_country string, event_time timestamp,
                longitude double, latitude double, baro_altitude double, velocity double,
                true_track double, vertical_rate double, on_ground boolean, squawk string,
                anomaly_score double, ml_anomaly boolean, rules array<string>, model_version string,
                detected_at timestamp, event_date date""" + _EXPLAINED,
            description="Flagged states only: ML score and the names of the rules that fired.",
        ),
        Table(
            name="gold.window_stats",
            partition_by=(),
            keys=("window_start",),
            schema="""window_start timestamp, window_end timestamp, aircraft bigint, airborne bigint,
                position_reports bigint, avg_velocity double, avg_vertical_rate double,
                avg_baro_altitude double, anomalies bigint""",
            description="Tumbling windows over all traffic; counts are distinct aircraft.",
        ),
        Table(
            name="gold.country_counts",
            partition_by=(),
            keys=("window_start", "origin_country"),
            schema="""window_start timestamp, window_end timestamp, origin_country string,
                aircraft bigint, airborne bigint, position_reports bigint, avg_velocity double,
                avg_baro_altitude double""",
            description="Tumbling windows per origin country; counts are distinct aircraft.",
        ),
        # Bookkeeping of the jobs (names start with "_"): durable, Delta, time-travelled like the rest.
        Table(
            name="silver._dedup_stats",
            partition_by=(),
            keys=("app_id", "batch_id"),
            schema="""app_id string, batch_id bigint, bronze_rows bigint, flights_rows bigint,
                quarantine_rows bigint, duplicates bigint, unchecked_late_rows bigint,
                max_event_time timestamp, committed_at timestamp""",
            description="One row per silver micro-batch: rows in, rows out per table, duplicates dropped.",
        ),
        Table(
            name="gold._state",
            partition_by=(),
            keys=("generation", "kind", "icao24", "event_time", "window_start", "origin_country"),
            schema="kind string, " + _STATE_COLUMNS + _SCORED_COLUMNS + _WINDOW_PARTIAL_COLUMNS + _EXPLAINED
            + _GENERATION,
            description="Gold job state: each aircraft's last state (kind 'last') and, per window not "
            "closed yet, each aircraft's states summed (kind 'window'); one generation of rows per batch, "
            "appended, the newest is the state (older ones dropped every few batches).",
        ),
    )
}


def table(name: str) -> Table:
    """Look a table up by its ``layer.name``; a clear error names the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}") from None


def table_path(settings: Settings, name: str) -> str:
    return table(name).path(settings)


def checkpoint_path(settings: Settings, job: str, query: str) -> str:
    return join_path(settings.storage.root, "_checkpoints", job, query)


# (job, query) of each streaming query's checkpoint: `run all`'s single query, and the layer jobs.
PIPELINE_CHECKPOINT = ("all", "pipeline")
LAYER_CHECKPOINTS = {"bronze": ("bronze", "opensky_states"), "silver": ("silver", "flights"), "gold": ("gold", "gold")}
