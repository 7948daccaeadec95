"""Real recorded traffic as replay files (``opensky-lakehouse samples``, ``lakehouse.app.commands.samples``).

The ``traffic`` library (xoolive/traffic, MIT) ships OpenSky Network recordings as samples in
its wheel. This command fetches the ``traffic==2.13`` wheel with ``pip download --no-deps``
(cached under ``spark.cache_dir``, default ``~/.cache/opensky-lakehouse``; nothing is
installed), reads ``traffic/data/samples/**/<NAME>.json.gz`` (``quickstart``: about 3 hours of
traffic around Paris on 2021-10-07, 213 aircraft) and writes a replay file (default
``data/samples/<NAME>.jsonl.gz``), one ``/states/all`` response per line:

- a snapshot every 10 s (OpenSky's resolution for anonymous users) holding each aircraft's latest
  point no older than 60 s; a field missing in that point keeps the aircraft's last value of the
  previous 60 s, as OpenSky's state vectors do;
- units converted to OpenSky's SI units: altitude ft -> m, ground speed kt -> m/s, vertical rate
  ft/min -> m/s; the callsign is padded to 8 characters as OpenSky sends it;
- ``origin_country`` from the ICAO 24-bit address allocation blocks (:mod:`ingestion.icao`).

``samples list`` shows the sample names available in the wheel.
"""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

TRAFFIC_VERSION = "2.13"
WHEEL_NAME = f"traffic-{TRAFFIC_VERSION}-py3-none-any.whl"
SAMPLES_PREFIX = "traffic/data/samples/"
SNAPSHOT_EVERY_S = 10
MAX_AGE_S = 60

FT_TO_M = 0.3048
KT_TO_MS = 1852.0 / 3600.0
FPM_TO_MS = FT_TO_M / 60.0



# pip's own words (urllib3 errors, OS errors) when the package index cannot be reached at all.
_NETWORK_MARKERS = ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError", "ReadTimeoutError",
                    "ProxyError", "SSLError", "Max retries exceeded", "Network is unreachable",
                    "Temporary failure in name resolution", "Connection refused", "Read timed out")
NETWORK_FAILURE = "network error reaching the package index"


class DownloadError(RuntimeError):
    """``pip download`` failed; ``network`` when the package index could not be reached."""

    def __init__(self, message: str, network: bool):
        super().__init__(message)
        self.network = network


def fetch_wheel(cache_dir: str | Path, timeout_s: float = 600) -> Path:
    """The cached traffic wheel (28 MB), downloaded with ``pip download --no-deps`` when missing.

    Raises :class:`DownloadError`; its message says ``network error reaching the package index``
    when pip could not connect (no network, DNS, proxy, TLS, timeout), so callers can tell an
    offline machine from a real failure.
    """
    cache = Path(cache_dir).expanduser()
    wheel = cache / WHEEL_NAME
    if wheel.is_file() and zipfile.is_zipfile(wheel):
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    log.info("downloading traffic==%s (wheel only, --no-deps, about 28 MB) into %s", TRAFFIC_VERSION, cache)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
             "--dest", str(cache), f"traffic=={TRAFFIC_VERSION}"],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    except subprocess.TimeoutExpired:
        raise DownloadError(f"pip download traffic=={TRAFFIC_VERSION}: {NETWORK_FAILURE} "
                            f"(no answer within {timeout_s:g} s)", network=True) from None
    if result.returncode != 0 or not wheel.is_file():
        output = f"{result.stdout}\n{result.stderr}"
        tail = " | ".join(output.strip().splitlines()[-3:])
        marker = next((m for m in _NETWORK_MARKERS if m in output), None)
        if marker:
            raise DownloadError(f"pip download traffic=={TRAFFIC_VERSION}: {NETWORK_FAILURE} ({marker}): {tail}",
                                network=True)
        raise DownloadError(f"pip download traffic=={TRAFFIC_VERSION} failed: {tail}", network=False)
    return wheel


def sample_names(wheel: Path) -> dict[str, str]:
    """Sample name -> member path in the wheel (``.json.gz`` samples only)."""
    with zipfile.ZipFile(wheel) as archive:
        return {
            member.rsplit("/", 1)[1][: -len(".json.gz")]: member
            for member in archive.namelist()
            if member.startswith(SAMPLES_PREFIX) and member.endswith(".json.gz")
        }


def read_sample(wheel: Path, name: str):
    """The sample's points as a pandas DataFrame (one row per recorded point)."""
    import pandas as pd

    names = sample_names(wheel)
    if name not in names:
        raise KeyError(f"no sample named {name!r} in {wheel.name}; available: {', '.join(sorted(names))}")
    with zipfile.ZipFile(wheel) as archive:
        data = json.loads(gzip.decompress(archive.read(names[name])))
    frame = pd.DataFrame(data)
    missing = {"icao24", "timestamp", "latitude", "longitude"} - set(frame.columns)
    if missing:
        raise ValueError(f"sample {name!r} has no {', '.join(sorted(missing))} column: not a track collection")
    return frame


def _squawk(value) -> str | None:
    if value is None or value != value:  # None or NaN
        return None
    if isinstance(value, float):
        value = int(value)
    return str(value).zfill(4)


def _callsign(value) -> str | None:
    if value is None or value != value:
        return None
    return str(value).ljust(8)  # OpenSky pads callsigns to 8 characters


def _round(value, digits: int):
    return None if value is None or value != value else round(float(value), digits)


def to_responses(frame, skip_minutes: float = 0.0, minutes: float = 0.0) -> list[dict]:
    """Replay responses (one per 10 s snapshot) from a track collection's points."""
    import numpy as np
    import pandas as pd

    from ingestion.icao import country_of

    df = frame.copy()
    df["icao24"] = df["icao24"].astype(str).str.lower()
    df["ts"] = (pd.to_numeric(df["timestamp"]) // 1000).astype("int64")  # ms -> s
    if "last_position" in df.columns:
        df["tpos"] = (pd.to_numeric(df["last_position"]) // 1000).astype("Int64").fillna(df["ts"])
    else:
        df["tpos"] = df["ts"]
    for column in ("altitude", "geoaltitude", "groundspeed", "track", "vertical_rate",
                   "callsign", "squawk", "onground"):
        if column not in df.columns:
            df[column] = None
    df = df.sort_values(["icao24", "ts"], kind="stable").reset_index(drop=True)

    # OpenSky keeps each field's last known value: carry values forward within one aircraft,
    # but never from a point older than MAX_AGE_S.
    for column in ("altitude", "geoaltitude", "groundspeed", "track", "vertical_rate", "callsign",
                   "squawk", "onground"):
        seen_at = df["ts"].where(df[column].notna())
        seen_at = seen_at.groupby(df["icao24"]).ffill()
        filled = df[column].groupby(df["icao24"]).ffill()
        df[column] = filled.where(df["ts"] - seen_at <= MAX_AGE_S)

    first = int(df["ts"].min() + skip_minutes * 60)
    start = -(-first // SNAPSHOT_EVERY_S) * SNAPSHOT_EVERY_S
    end = int(df["ts"].max())
    if minutes:
        end = min(end, start + int(minutes * 60) - 1)
    snapshots = np.arange(start, end + 1, SNAPSHOT_EVERY_S, dtype="int64")

    per_snapshot: list[list[list]] = [[] for _ in snapshots]
    for icao24, group in df.groupby("icao24", sort=True):
        ts = group["ts"].to_numpy()
        idx = np.searchsorted(ts, snapshots, side="right") - 1
        ok = idx >= 0
        ok[ok] = snapshots[ok] - ts[idx[ok]] <= MAX_AGE_S
        country = country_of(icao24)
        rows = group.to_dict("records")
        for k in np.flatnonzero(ok):
            p = rows[idx[k]]
            alt = _round(None if p["altitude"] is None else p["altitude"] * FT_TO_M, 2)
            geo = _round(None if p["geoaltitude"] is None else p["geoaltitude"] * FT_TO_M, 2)
            onground = p["onground"]
            per_snapshot[k].append([
                icao24, _callsign(p["callsign"]), country, int(p["tpos"]), int(p["ts"]),
                _round(p["longitude"], 5), _round(p["latitude"], 5), alt,
                bool(onground) if onground is not None and onground == onground else False,
                _round(None if p["groundspeed"] is None else p["groundspeed"] * KT_TO_MS, 2),
                _round(p["track"], 2),
                _round(None if p["vertical_rate"] is None else p["vertical_rate"] * FPM_TO_MS, 2),
                None, geo, _squawk(p["squawk"]), False, 0, 0,
            ])
    return [{"time": int(t), "states": rows or None} for t, rows in zip(snapshots, per_snapshot, strict=True)]


def write_replay(responses: list[dict], out: Path) -> int:
    """Write responses to ``out`` (replaced, gzip when it ends in .gz); return the state count."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(tmp, "wt", encoding="utf-8") as fh:
        for response in responses:
            fh.write(json.dumps(response, separators=(",", ":")) + "\n")
    tmp.replace(out)  # readers never see a half-written file
    return sum(len(r["states"] or ()) for r in responses)


