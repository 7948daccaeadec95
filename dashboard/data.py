"""The dashboard's data layer: gold tables read with delta-rs (no Spark, no JVM).

``get_reader(settings)`` returns the one :class:`GoldReader` of a lakehouse root, shared by
every session of the Streamlit process. Per table it keeps one ``DeltaTable`` brought up to
date with ``update_incremental()`` and the table's history (version -> commit time) extended
with only the commits that are new since the last refresh. Decoded versions sit in one LRU
(:class:`FrameCache`) shared by the four tables, bounded in versions per table and in bytes in
all: a Delta version never changes, so a cached one is never stale.

A *moment* is a version of ``gold.live_flights`` (the sky as one gold batch left it); the other
gold tables are read as of the last commit before the next ``gold.live_flights`` version, so a
batch's anomalies and closed windows belong to the moment of that batch. Only the columns a
page needs are read, and append-only tables only from the newest files (file statistics).

The pure helpers at the end (``kpis``, ``apply_filters``, ``feed``) take and return frames.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.catalog import table, table_path
from lakehouse.delta_rs import delta_uri, storage_options
from lakehouse.settings import Settings

LIVE = "gold.live_flights"
ANOMALIES = "gold.anomalies"
WINDOWS = "gold.window_stats"
COUNTRIES = "gold.country_counts"
GOLD_TABLES = (LIVE, ANOMALIES, WINDOWS, COUNTRIES)

LIVE_COLUMNS = [
    "icao24", "callsign", "origin_country", "event_time", "longitude", "latitude", "baro_altitude",
    "on_ground", "velocity", "true_track", "vertical_rate", "squawk", "rules", "rule_anomaly",
    "anomaly_score", "ml_anomaly", "is_anomaly", "ml_reason",
]
ANOMALY_COLUMNS = [
    "icao24", "callsign", "origin_country", "event_time", "longitude", "latitude", "baro_altitude",
    "velocity", "vertical_rate", "anomaly_score", "ml_anomaly", "rules", "ml_reason",
]
TRAIL_COLUMNS = ["icao24", "event_time", "longitude", "latitude", "baro_altitude"]
ML_RULE = "ml_anomaly"  # the filter's name for "flagged by the model"


class VersionUnavailable(RuntimeError):
    """A version the history named can no longer be read (log cleaned up or files vacuumed)."""


@dataclass(frozen=True)
class Moment:
    """What the page shows: a ``gold.live_flights`` version and how to read the others."""

    version: int
    committed_at: pd.Timestamp
    # The other tables are read as of their last commit strictly before this (None: newest).
    until: pd.Timestamp | None
    previous: int | None  # the version before, for the KPI deltas
    latest: bool


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame({"version": pd.Series(dtype="int64"),
                         "committed_at": pd.Series(dtype="datetime64[ns, UTC]")})


class FrameCache:
    """Decoded versions of the gold tables, least recently used first out: at most ``per_table``
    frames of one table and ``max_bytes`` in all (pandas' deep size, taken once per frame).

    A whole ``gold.live_flights`` version of 50,000 aircraft is ~22 MB decoded (its strings are
    Python objects): a count alone let a dashboard left open at 10,000 states/s grow by a frame
    every refresh, to ~1.4 GB for 64 versions. The frame just added always stays, even alone
    over the budget: the page that asked for it uses it.
    """

    def __init__(self, max_bytes: int, per_table: int):
        self.max_bytes = max_bytes
        self.per_table = per_table
        self._frames: OrderedDict[tuple, tuple[pd.DataFrame, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, table: str, key: tuple) -> pd.DataFrame | None:
        with self._lock:
            hit = self._frames.get((table, key))
            if hit is None:
                return None
            self._frames.move_to_end((table, key))
            return hit[0]

    def put(self, table: str, key: tuple, frame: pd.DataFrame) -> None:
        size = int(frame.memory_usage(deep=True).sum())
        with self._lock:
            self._drop((table, key))
            self._frames[(table, key)] = (frame, size)
            self._bytes += size
            mine = [k for k in self._frames if k[0] == table]
            for old in mine[:max(0, len(mine) - self.per_table)]:
                self._drop(old)
            while self._bytes > self.max_bytes and len(self._frames) > 1:
                self._drop(next(iter(self._frames)))

    def clear(self, table: str) -> None:
        with self._lock:
            for key in [k for k in self._frames if k[0] == table]:
                self._drop(key)

    def _drop(self, key: tuple) -> None:
        hit = self._frames.pop(key, None)
        if hit is not None:
            self._bytes -= hit[1]


class DeltaSource:
    """One Delta table: its newest state, its history, and its decoded versions (in ``cache``)."""

    def __init__(self, uri: str, options: dict[str, str], cache: FrameCache):
        self.uri = uri
        self.options = options
        self.cache = cache
        self._dt = None
        self._history = _empty_history()
        self._lock = threading.RLock()

    # -- newest state and history -------------------------------------------------------------
    def refresh(self) -> bool:
        """Bring the table up to date; return whether it exists."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        with self._lock:
            if self._dt is None:
                try:
                    self._dt = DeltaTable(self.uri, storage_options=self.options)
                except TableNotFoundError:
                    return False
                self._history = self._read_history(None)
                return True
            known = self._dt.version()
            try:
                self._dt.update_incremental()
            except (DeltaError, OSError):  # table replaced or log cleaned up: start over
                self._dt = None
                self.cache.clear(self.uri)
                return self.refresh()
            newest = self._dt.version()
            if newest < known:  # the table was re-created under the same path
                self.cache.clear(self.uri)
                self._history = self._read_history(None)
            elif newest > known:
                fresh = self._read_history(newest - known)
                self._history = pd.concat([self._history[self._history.version < fresh.version.min()], fresh],
                                          ignore_index=True)
            return True

    def _read_history(self, limit: int | None) -> pd.DataFrame:
        entries = self._dt.history(limit)
        if not entries:
            return _empty_history()
        frame = pd.DataFrame({
            "version": [int(e["version"]) for e in entries],
            "committed_at": pd.to_datetime([int(e["timestamp"]) for e in entries], unit="ms", utc=True),
        })
        return frame.sort_values("version", ignore_index=True)

    @property
    def exists(self) -> bool:
        return self._dt is not None

    @property
    def version(self) -> int | None:
        with self._lock:
            return None if self._dt is None else self._dt.version()

    def history(self) -> pd.DataFrame:
        with self._lock:
            return self._history.copy()

    def version_at(self, until: pd.Timestamp | None) -> int | None:
        """The newest version committed strictly before ``until`` (None: the newest version)."""
        with self._lock:
            if self._dt is None:
                return None
            if until is None:
                return self._dt.version()
            earlier = self._history[self._history.committed_at < until]
            return None if earlier.empty else int(earlier.version.iloc[-1])

    # -- reading a version ----------------------------------------------------------------------
    def _table_at(self, version: int):
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        with self._lock:
            if self._dt is not None and self._dt.version() == version:
                return self._dt
        try:
            return DeltaTable(self.uri, version=version, storage_options=self.options)
        except (DeltaError, OSError) as exc:
            self._forget_before(version)
            raise VersionUnavailable(f"{self.uri} version {version} can no longer be read: {exc}") from None

    def _forget_before(self, version: int) -> None:
        with self._lock:
            self._history = self._history[self._history.version > version].reset_index(drop=True)

    def read(self, version: int, columns: list[str], key: str = "", filter_expr=None,
             pruning=None, dt=None) -> pd.DataFrame:
        """Columns of one version, cached under ``(version, columns, key)``.

        ``pruning`` (delta-rs tuple filters) selects the files by their statistics before any is
        opened; ``filter_expr`` (pyarrow) then selects rows. ``key`` names the filters in the
        cache key; callers pass a different key per filter.
        """
        cache_key = (version, tuple(columns), key)
        hit = self.cache.get(self.uri, cache_key)
        if hit is not None:
            return hit
        dt = dt or self._table_at(version)
        try:
            dataset = dt.to_pyarrow_dataset(file_pruning_predicate=pruning)
            # Single-threaded scan: pyarrow's scanner threads abort the process at interpreter
            # exit now and then (delta-io/delta-rs#2184); these reads are small anyway.
            # a column added after this version was written (lakehouse.table_setup.ADDED_COLUMNS) reads null
            present = [c for c in columns if c in dataset.schema.names]
            arrow = dataset.to_table(columns=present, filter=filter_expr, use_threads=False)
        except (FileNotFoundError, OSError) as exc:  # data files vacuumed away
            self._forget_before(version)
            raise VersionUnavailable(f"{self.uri} version {version} can no longer be read: {exc}") from None
        frame = arrow.to_pandas()
        for c in columns:
            if c not in frame:
                frame[c] = None
        frame = frame[list(columns)]
        self.cache.put(self.uri, cache_key, frame)
        return frame

    def cached(self, version: int, columns: list[str], key: str = "") -> pd.DataFrame | None:
        return self.cache.get(self.uri, (version, tuple(columns), key))

    def newest_stat(self, dt, column: str):
        """Largest ``max.<column>`` of the files of ``dt`` (None without statistics)."""
        actions = dt.get_add_actions(flatten=True)
        name = f"max.{column}"
        if not actions.num_rows or name not in actions.column_names:
            return None
        values = [v for v in actions.column(name).to_pylist() if v is not None]
        return max(values) if values else None


class GoldReader:
    """The four gold tables of one lakehouse root, read as of any moment they still hold."""

    def __init__(self, settings: Settings):
        self.settings = settings
        options = storage_options(settings)
        self.cache = FrameCache(settings.dashboard.cache_mb * 2**20, settings.dashboard.cache_versions)
        self.sources = {name: DeltaSource(delta_uri(table_path(settings, name)), options, self.cache)
                        for name in GOLD_TABLES}
        self._refresh_lock = threading.Lock()

    def refresh(self) -> dict[str, bool]:
        """Bring every table up to date; return name -> exists."""
        with self._refresh_lock:
            return {name: source.refresh() for name, source in self.sources.items()}

    def exists(self, name: str) -> bool:
        return self.sources[name].exists

    def history(self) -> pd.DataFrame:
        """Versions and commit times of ``gold.live_flights``, oldest first."""
        return self.sources[LIVE].history()

    def newest_commit(self) -> pd.Timestamp | None:
        times = [s.history().committed_at.max() for s in self.sources.values() if s.exists]
        times = [t for t in times if not pd.isna(t)]
        return max(times) if times else None

    def moment(self, version: int | None = None) -> Moment:
        """The moment of ``version`` of ``gold.live_flights`` (None or newest: live)."""
        history = self.history()
        if history.empty:
            raise VersionUnavailable(f"{LIVE} has no readable version")
        versions = history.version.tolist()
        if version is None or version not in versions:
            version = versions[-1] if version is None or version > versions[-1] else versions[0]
        i = versions.index(version)
        latest = i == len(versions) - 1
        return Moment(
            version=version,
            committed_at=history.committed_at.iloc[i],
            until=None if latest else history.committed_at.iloc[i + 1],
            previous=versions[i - 1] if i > 0 else None,
            latest=latest,
        )

    def live(self, version: int) -> pd.DataFrame:
        """``gold.live_flights`` as of ``version``: the page's columns."""
        return self.sources[LIVE].read(version, LIVE_COLUMNS)

    def anomalies(self, moment: Moment, minutes: float) -> pd.DataFrame:
        """Flagged states of the last ``minutes`` of event time as of ``moment``, newest first."""
        source = self.sources[ANOMALIES]
        version = source.version_at(moment.until)
        if version is None:
            return _empty(ANOMALY_COLUMNS)
        frame = source.cached(version, ANOMALY_COLUMNS, f"recent:{minutes}")
        if frame is None:
            frame = self._read_recent_anomalies(source, version, minutes)
        return frame.sort_values("event_time", ascending=False, ignore_index=True)

    @staticmethod
    def _read_recent_anomalies(source: DeltaSource, version: int, minutes: float) -> pd.DataFrame:
        dt = source._table_at(version)
        newest = source.newest_stat(dt, "event_time")
        filter_expr, pruning = None, None
        if newest is not None:
            since = pd.Timestamp(newest) - timedelta(minutes=minutes)
            filter_expr = pc.field("event_time") >= pa.scalar(since.to_pydatetime(), pa.timestamp("us", "UTC"))
            pruning = [("event_time", ">=", _iso(since))]
        return source.read(version, ANOMALY_COLUMNS, f"recent:{minutes}", filter_expr, pruning, dt)

    def windows(self, moment: Moment, minutes: float) -> pd.DataFrame:
        """``gold.window_stats`` rows of the last ``minutes`` of windows as of ``moment``."""
        source = self.sources[WINDOWS]
        version = source.version_at(moment.until)
        if version is None:
            return _empty(_columns(WINDOWS))
        frame = source.read(version, _columns(WINDOWS))
        if frame.empty:
            return frame
        since = frame.window_start.max() - timedelta(minutes=minutes)
        return frame[frame.window_start >= since].sort_values("window_start", ignore_index=True)

    def countries(self, moment: Moment) -> pd.DataFrame:
        """``gold.country_counts`` of the newest closed window as of ``moment``."""
        source = self.sources[COUNTRIES]
        version = source.version_at(moment.until)
        if version is None:
            return _empty(_columns(COUNTRIES))
        cached = source.cached(version, _columns(COUNTRIES), "newest")
        if cached is not None:
            return cached
        dt = source._table_at(version)
        newest = source.newest_stat(dt, "window_start")
        filter_expr, pruning = None, None
        if newest is not None:
            filter_expr = pc.field("window_start") >= pa.scalar(pd.Timestamp(newest).to_pydatetime(),
                                                                pa.timestamp("us", "UTC"))
            pruning = [("window_start", ">=", _iso(pd.Timestamp(newest)))]
        frame = source.read(version, _columns(COUNTRIES), "newest", filter_expr, pruning, dt)
        if not frame.empty:
            frame = frame[frame.window_start == frame.window_start.max()].reset_index(drop=True)
        return frame

    def trail(self, icao24: str, moment: Moment, minutes: float, max_versions: int) -> pd.DataFrame:
        """Positions of ``icao24`` over the ``minutes`` of event time up to ``moment``, oldest first.

        Read from ``gold.live_flights`` versions walking back from the moment (at most
        ``max_versions`` reads, spaced by the event time a version advances, on a grid of
        versions so that the next refresh finds them cached) and from the aircraft's flagged
        states in ``gold.anomalies``.
        """
        live = self.sources[LIVE]
        versions = self.history().version.tolist()
        versions = versions[: versions.index(moment.version) + 1] if moment.version in versions else []
        spacing_s = minutes * 60.0 / max(max_versions, 1)
        only = pc.field("icao24") == icao24
        parts, newest, last, stride, reads = [], None, None, 1, 0
        version = versions[-1] if versions else None
        while version is not None and version >= versions[0] and reads < max_versions:
            full = live.cached(version, LIVE_COLUMNS)
            try:
                part = (full[full.icao24 == icao24][TRAIL_COLUMNS] if full is not None
                        else live.read(version, TRAIL_COLUMNS, f"icao24={icao24}", only))
            except VersionUnavailable:
                break
            reads += 1
            if not part.empty:
                seen = part.event_time.max()
                newest = seen if newest is None else newest
                if seen < newest - timedelta(minutes=minutes):
                    break
                if last is not None and last[0] > version and last[1] > seen:
                    per_version_s = (last[1] - seen).total_seconds() / (last[0] - version)
                    stride = max(1, round(spacing_s / per_version_s))
                last = (version, seen)
                parts.append(part)
            version = ((version - 1) // stride) * stride
        flagged = self.anomalies(moment, minutes)
        parts.append(flagged[flagged.icao24 == icao24][TRAIL_COLUMNS])
        parts = [p for p in parts if not p.empty]
        if not parts:
            return _empty(TRAIL_COLUMNS)
        points = pd.concat(parts, ignore_index=True).dropna(subset=["longitude", "latitude"])
        points = points.drop_duplicates("event_time").sort_values("event_time", ignore_index=True)
        if points.empty:
            return points
        return points[points.event_time >= points.event_time.max() - timedelta(minutes=minutes)]


def _iso(ts: pd.Timestamp) -> str:
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _columns(name: str) -> list[str]:
    return table(name).columns


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


_READERS: dict[tuple, GoldReader] = {}
_READERS_LOCK = threading.Lock()


def get_reader(settings: Settings) -> GoldReader:
    """The shared reader of this lakehouse root (one per root and storage options)."""
    key = (settings.storage.root, tuple(sorted(storage_options(settings).items())),
           settings.dashboard.cache_versions, settings.dashboard.cache_mb)
    with _READERS_LOCK:
        if key not in _READERS:
            _READERS[key] = GoldReader(settings)
        return _READERS[key]


# -- pure helpers --------------------------------------------------------------------------------
def rule_list(value) -> list[str]:
    """The ``rules`` cell as a Python list (Arrow lists arrive as arrays or None)."""
    return [] if value is None or (isinstance(value, float) and pd.isna(value)) else [str(v) for v in value]


def kpis(live: pd.DataFrame) -> dict[str, float | int | None]:
    """Live aircraft, airborne, anomalies, mean altitude (m) and speed (m/s) of the airborne."""
    airborne = live[live.on_ground.fillna(False).astype(bool) == False]  # noqa: E712 (nullable)
    return {
        "live": int(len(live)),
        "airborne": int(len(airborne)),
        "anomalies": int(live.is_anomaly.fillna(False).astype(bool).sum()),
        "altitude": None if airborne.baro_altitude.dropna().empty else float(airborne.baro_altitude.mean()),
        "speed": None if airborne.velocity.dropna().empty else float(airborne.velocity.mean()),
    }


def rule_names(*frames: pd.DataFrame) -> list[str]:
    """Every rule name found in the ``rules`` column of the frames, plus the ML flag's name."""
    names = {r for f in frames if "rules" in f for cell in f.rules for r in rule_list(cell)}
    return sorted(names) + [ML_RULE]


def apply_filters(frame: pd.DataFrame, countries=(), rules=(), altitude: tuple[float, float] | None = None,
                  ) -> pd.DataFrame:
    """Rows of these origin countries, flagged by any of these rules (``ml_anomaly`` = by the
    model), with ``baro_altitude`` in the band (inclusive). Empty selections filter nothing."""
    keep = pd.Series(True, index=frame.index)
    if countries:
        keep &= frame.origin_country.isin(list(countries))
    if rules:
        wanted = set(rules)
        by_rule = frame.rules.map(lambda cell: bool(wanted.intersection(rule_list(cell))))
        if ML_RULE in wanted:
            by_rule |= frame.ml_anomaly.fillna(False).astype(bool)
        keep &= by_rule
    if altitude is not None:
        keep &= frame.baro_altitude.between(altitude[0], altitude[1])
    return frame[keep]


def feed(anomalies: pd.DataFrame, limit: int) -> pd.DataFrame:
    """One row per aircraft: its newest flagged state, how many it had, newest first."""
    if anomalies.empty:
        return anomalies.assign(states=pd.Series(dtype="int64"), first_flagged=pd.Series(dtype="object"))
    ordered = anomalies.sort_values("event_time", ascending=False)
    grouped = ordered.groupby("icao24", sort=False)
    newest = grouped.head(1).set_index("icao24")
    newest["states"] = grouped.size()
    newest["first_flagged"] = grouped.event_time.min()
    return newest.reset_index().sort_values("event_time", ascending=False, ignore_index=True).head(limit)
