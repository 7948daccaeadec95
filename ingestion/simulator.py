"""Synthetic air traffic in OpenSky format, with labelled injected anomalies.

    sim = Simulator(seed=42, aircraft=10_000, anomaly_rate=0.02)
    for response in sim.snapshots(360):     # {"time": ..., "states": [[18 fields], ...]}
        ...
    sim.labels                              # [Label(icao24, time_position, kind), ...]

Deterministic for a seed (and ``start_time``). Vectorised with numpy: 10,000 aircraft advance
and serialise in milliseconds per snapshot, 50,000 are fine. Kinematics: flights between real
airports along great circles; climb at 5-15 m/s to a cruise level, cruise, descend on a 3 degree
path, land, taxi, depart again; speed grows with altitude. Position, ground speed, track and
vertical rate are consistent with each other from one snapshot to the next. Some aircraft start
on the ground (``ground_fraction``).

Anomalies: in every period of ``anomaly_period`` snapshots, a fraction ``anomaly_rate`` of the
aircraft gets one anomaly starting at a random snapshot of the period (when airborne then):

- ``emergency_squawk``: squawk 7500, 7600 or 7700 for 6 snapshots;
- ``rapid_descent``: a real descent at 35-60 m/s for 4 snapshots (from above 4,000 m);
- ``speed_spike``: one report with 2-3 times the ground speed (at least 450 m/s);
- ``position_jump``: one report 0.5-1.5 degrees away from the track;
- ``altitude_drop``: one report with the barometric altitude dropped to 50-250 m at speed.

Those five (:data:`RULE_KINDS`, the default ``kinds``) are what the safety rules
(``lakehouse.transforms.rules``) are for. The kinds of :data:`MODEL_KINDS` (pass
``kinds=ANOMALY_KINDS``) stay inside every rule's bounds and are invisible to them: each is a state
physically inconsistent with itself or with the aircraft's previous report, which only a model
of normal kinematics can tell:

- ``slow_cruise``: one report at cruise altitude (above 6,000 m) with a ground speed of 60-90 m/s,
  a crawl at which no airliner stays airborne up there (it keeps flying at its real speed);
- ``altitude_step``: one barometric altitude 150-400 m above or below the level the aircraft
  cruises at, while the reported vertical rate stays flat and the geometric altitude does not
  move;
- ``geo_divergence``: for 3 reports the geometric (GNSS) altitude 800-1,500 m away from the
  barometric one, far beyond what weather explains;
- ``speed_mismatch``: for 3 reports a ground speed 35-50 % below the distance actually flown
  per second (well within the position-jump rule's factor of 3);
- ``impossible_turn``: for 2 reports a true track 70-150 degrees away from the course flown,
  a turn no aircraft makes in one report interval.

Every anomalous state is labelled ``(icao24, time_position, kind)`` (``write_labels`` -> CSV).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ingestion.icao import blocks_of

EARTH_RADIUS_M = 6_371_000.0
# Kinds a safety rule names (see the module docstring) and kinds no rule can see.
RULE_KINDS = ("emergency_squawk", "rapid_descent", "speed_spike", "position_jump", "altitude_drop")
MODEL_KINDS = ("slow_cruise", "altitude_step", "geo_divergence", "speed_mismatch", "impossible_turn")
ANOMALY_KINDS = RULE_KINDS + MODEL_KINDS
_DURATION = {"emergency_squawk": 6, "rapid_descent": 4, "speed_spike": 1, "position_jump": 1, "altitude_drop": 1,
             "slow_cruise": 1, "altitude_step": 1, "geo_divergence": 3, "speed_mismatch": 3, "impossible_turn": 2}
# Where a kind can be injected: (minimum altitude in m, cruising only).
_APPLICABLE = {"rapid_descent": (4000.0, False), "slow_cruise": (6000.0, False), "altitude_step": (3000.0, True),
               "speed_mismatch": (1000.0, False), "impossible_turn": (500.0, False)}
GROUND, CLIMB, CRUISE, DESCENT = 0, 1, 2, 3

# (ICAO code, latitude, longitude) of real airports.
AIRPORTS = [
    ("LFPG", 49.0097, 2.5479), ("EGLL", 51.4700, -0.4543), ("EDDF", 50.0379, 8.5622), ("EHAM", 52.3105, 4.7683),
    ("LEMD", 40.4983, -3.5676), ("LIRF", 41.8003, 12.2389), ("LSZH", 47.4582, 8.5555), ("LOWW", 48.1103, 16.5697),
    ("EKCH", 55.6180, 12.6508), ("ESSA", 59.6498, 17.9238), ("ENGM", 60.1976, 11.1004), ("EFHK", 60.3172, 24.9633),
    ("EPWA", 52.1657, 20.9671), ("LKPR", 50.1008, 14.2600), ("LPPT", 38.7813, -9.1359), ("LGAV", 37.9364, 23.9445),
    ("LTFM", 41.2753, 28.7519), ("EIDW", 53.4213, -6.2701), ("EDDM", 48.3537, 11.7750), ("LEBL", 41.2974, 2.0833),
    ("LFMN", 43.6584, 7.2159), ("LFBO", 43.6291, 1.3638), ("EBBR", 50.9014, 4.4844), ("LIMC", 45.6306, 8.7281),
    ("KJFK", 40.6413, -73.7781), ("KORD", 41.9742, -87.9073), ("KATL", 33.6407, -84.4277), ("KLAX", 33.9416, -118.4085),
    ("KDFW", 32.8998, -97.0403), ("KDEN", 39.8561, -104.6737), ("KSFO", 37.6213, -122.3790), ("KSEA", 47.4502, -122.3088),
    ("KMIA", 25.7959, -80.2870), ("KBOS", 42.3656, -71.0096), ("CYYZ", 43.6777, -79.6248), ("CYVR", 49.1967, -123.1815),
    ("OMDB", 25.2532, 55.3657), ("OTHH", 25.2731, 51.6081), ("VHHH", 22.3080, 113.9185), ("RJTT", 35.5494, 139.7798),
    ("WSSS", 1.3644, 103.9915), ("ZBAA", 40.0799, 116.6031), ("YSSY", -33.9399, 151.1753), ("SBGR", -23.4356, -46.4731),
    ("FAOR", -26.1392, 28.2460), ("HECA", 30.1219, 31.4056), ("VIDP", 28.5562, 77.1000), ("RKSI", 37.4602, 126.4407),
]
# Registration countries (weights) with the airline prefix of their callsigns.
_FLEETS = [
    ("United States", 30, ("AAL", "UAL", "DAL", "SWA", "JBU")), ("Germany", 10, ("DLH", "EWG", "CFG")),
    ("France", 9, ("AFR", "TVF", "EZY")), ("United Kingdom", 9, ("BAW", "VIR", "EZY")),
    ("Spain", 6, ("IBE", "VLG", "AEA")), ("Italy", 4, ("ITY", "NOS")), ("Ireland", 5, ("RYR", "EIN")),
    ("Kingdom of the Netherlands", 4, ("KLM", "TRA")), ("Switzerland", 3, ("SWR", "EDW")),
    ("China", 6, ("CCA", "CES", "CSN")), ("Canada", 4, ("ACA", "WJA")), ("Japan", 3, ("JAL", "ANA")),
    ("United Arab Emirates", 3, ("UAE", "ETD")), ("Turkey", 3, ("THY", "PGT")), ("Australia", 2, ("QFA", "VOZ")),
    ("Brazil", 2, ("TAM", "GLO")), ("India", 3, ("AIC", "IGO")), ("Russian Federation", 2, ("AFL", "SBI")),
]


@dataclass(frozen=True)
class Label:
    icao24: str
    time_position: int
    kind: str


def _bearing(lat1, lon1, lat2, lon2):
    """Initial great-circle bearing (degrees) from point 1 to point 2 (arrays in degrees)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lon2 - lon1)
    x = np.sin(dl) * np.cos(p2)
    y = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return (np.degrees(np.arctan2(x, y)) + 360.0) % 360.0


def _distance(lat1, lon1, lat2, lon2):
    """Great-circle distance in metres (haversine)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _destination(lat, lon, bearing_deg, distance_m):
    """Point reached from (lat, lon) after ``distance_m`` along ``bearing_deg``."""
    p1, l1, b = np.radians(lat), np.radians(lon), np.radians(bearing_deg)
    d = distance_m / EARTH_RADIUS_M
    p2 = np.arcsin(np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(b))
    l2 = l1 + np.arctan2(np.sin(b) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * np.sin(p2))
    return np.degrees(p2), (np.degrees(l2) + 540.0) % 360.0 - 180.0


class Simulator:
    """Deterministic synthetic sky. See the module docstring."""

    def __init__(self, seed: int = 42, aircraft: int = 500, anomaly_rate: float = 0.02, interval_s: float = 10.0,
                 start_time: int = 1_700_000_000, ground_fraction: float = 0.08, anomaly_period: int = 60,
                 kinds: tuple[str, ...] = RULE_KINDS):
        if aircraft < 1:
            raise ValueError("aircraft must be at least 1")
        if not 0 <= anomaly_rate <= 1 or not 0 <= ground_fraction <= 1:
            raise ValueError("anomaly_rate and ground_fraction must be fractions between 0 and 1")
        unknown = sorted(set(kinds) - set(ANOMALY_KINDS))
        if unknown or not kinds:
            raise ValueError(f"anomaly kinds: {', '.join(unknown) or 'none given'}; known: {', '.join(ANOMALY_KINDS)}")
        self._kinds = np.array([ANOMALY_KINDS.index(k) for k in kinds])
        self.rng = np.random.default_rng(seed)
        self.n = aircraft
        self.anomaly_rate = anomaly_rate
        self.interval_s = float(interval_s)
        self._clock = float(start_time)
        self.anomaly_period = max(1, anomaly_period)
        self.step_index = 0
        self.labels: list[Label] = []
        self._ap = np.array([(a[1], a[2]) for a in AIRPORTS])
        self._make_fleet()
        self._make_flights(ground_fraction)
        # active anomalies: kind index per aircraft (-1 none), first/last step, parameters
        self._anomaly_kind = np.full(self.n, -1)
        self._anomaly_start = np.zeros(self.n, dtype=np.int64)
        self._anomaly_param = np.zeros(self.n)
        self._emergency_code = np.array(["7700"] * self.n, dtype=object)
        self._pending: dict[int, tuple[int, int]] = {}  # aircraft -> (start step, kind index)

    @property
    def time(self) -> int:
        """``time`` of the next snapshot (epoch seconds)."""
        return int(self._clock)

    # -- set-up ---------------------------------------------------------------------------------
    def _make_fleet(self) -> None:
        rng, n = self.rng, self.n
        weights = np.array([w for _, w, _ in _FLEETS], dtype=float)
        fleet = rng.choice(len(_FLEETS), size=n, p=weights / weights.sum())
        addresses = np.zeros(n, dtype=np.int64)
        for f, (country, _, _) in enumerate(_FLEETS):
            idx = np.flatnonzero(fleet == f)
            start, size = max(blocks_of(country), key=lambda b: b[1])
            addresses[idx] = start + rng.choice(size, size=len(idx), replace=len(idx) > size)
        # addresses must be unique: redraw collisions inside the same block
        _, first = np.unique(addresses, return_index=True)
        for i in sorted(set(range(n)) - set(first.tolist())):
            country = _FLEETS[fleet[i]][0]
            start, size = max(blocks_of(country), key=lambda b: b[1])
            taken = set(addresses.tolist())
            while addresses[i] in taken:
                addresses[i] = start + int(rng.integers(size))
        self.icao24 = np.array([f"{a:06x}" for a in addresses], dtype=object)
        self.country = np.array([_FLEETS[f][0] for f in fleet], dtype=object)
        self._fleet = fleet
        self.category = rng.choice([3, 4, 5, 6], size=n, p=[0.2, 0.55, 0.1, 0.15])
        self._geo_offset = rng.normal(0, 40, size=n)  # geometric minus barometric altitude

    def _new_route(self, idx: np.ndarray, origin: np.ndarray) -> None:
        """Give aircraft ``idx`` (at airports ``origin``) a destination, cruise level and callsign."""
        rng, k = self.rng, len(idx)
        if k == 0:
            return
        dest = rng.integers(len(AIRPORTS) - 1, size=k)
        dest = dest + (dest >= origin)  # never the origin itself
        self.origin[idx] = origin
        self.dest[idx] = dest
        dist = _distance(self._ap[origin, 0], self._ap[origin, 1], self._ap[dest, 0], self._ap[dest, 1])
        # short hops fly lower and slower
        self.cruise_alt[idx] = np.clip(dist / 100.0, 7000, 12500) + rng.uniform(-500, 500, size=k)
        self.cruise_speed[idx] = np.clip(170 + dist / 50_000.0, 180, 255) + rng.uniform(-10, 10, size=k)
        prefixes = [_FLEETS[f][2] for f in self._fleet[idx]]
        numbers = rng.integers(10, 9999, size=k)
        self.callsign[idx] = [f"{p[int(j) % len(p)]}{int(num)}".ljust(8)
                              for p, j, num in zip(prefixes, numbers, numbers, strict=True)]
        self.squawk[idx] = [f"{a}{b}{c}{d}" for a, b, c, d in rng.integers(0, 8, size=(k, 4))]
        # a departure code is never one of the emergency codes
        self.squawk[idx] = np.where(np.isin(self.squawk[idx], ["7500", "7600", "7700"]), "2000", self.squawk[idx])

    def _make_flights(self, ground_fraction: float) -> None:
        rng, n = self.rng, self.n
        self.origin = np.zeros(n, dtype=np.int64)
        self.dest = np.zeros(n, dtype=np.int64)
        self.cruise_alt = np.zeros(n)
        self.cruise_speed = np.zeros(n)
        self.callsign = np.empty(n, dtype=object)
        self.squawk = np.empty(n, dtype=object)
        self._new_route(np.arange(n), rng.integers(len(AIRPORTS), size=n))
        o, d = self.origin, self.dest
        total = _distance(self._ap[o, 0], self._ap[o, 1], self._ap[d, 0], self._ap[d, 1])
        # airborne aircraft start somewhere along their route, on the profile for that point
        frac = rng.uniform(0.02, 0.98, size=n)
        bearing = _bearing(self._ap[o, 0], self._ap[o, 1], self._ap[d, 0], self._ap[d, 1])
        self.lat, self.lon = _destination(self._ap[o, 0], self._ap[o, 1], bearing, frac * total)
        flown, to_go = frac * total, (1 - frac) * total
        self.alt = np.minimum.reduce([self.cruise_alt, flown / 12.0, to_go / 19.0])
        self.phase = np.where(self.alt >= self.cruise_alt - 1, CRUISE, np.where(flown / 12.0 <= to_go / 19.0,
                                                                                  CLIMB, DESCENT))
        self.speed = self._target_speed()
        self.track = _bearing(self.lat, self.lon, self._ap[d, 0], self._ap[d, 1])
        self.vrate = np.zeros(n)
        self.ground_timer = np.zeros(n)
        ground = rng.random(n) < ground_fraction
        self.phase[ground] = GROUND
        self.lat[ground], self.lon[ground] = self._ap[o[ground], 0], self._ap[o[ground], 1]
        self.alt[ground] = 0.0
        self.speed[ground] = 0.0
        self.ground_timer[ground] = rng.uniform(0, 1200, size=ground.sum())
        self._vertical_rates(np.ones(n, dtype=bool))

    # -- dynamics -------------------------------------------------------------------------------
    def _target_speed(self):
        return 75.0 + (self.cruise_speed - 75.0) * np.clip(self.alt / np.maximum(self.cruise_alt, 1), 0, 1) ** 0.7

    def _vertical_rates(self, mask) -> None:
        d = self.dest
        to_go = _distance(self.lat, self.lon, self._ap[d, 0], self._ap[d, 1])
        start_descent = (to_go < self.alt * 19.0) & (self.phase != GROUND)
        self.phase = np.where(start_descent, DESCENT, self.phase)
        # back to the cruise level after a forced descent
        below = (self.phase == CRUISE) & (self.alt < self.cruise_alt - 50)
        self.phase = np.where(below, CLIMB, self.phase)
        climb = np.clip((self.cruise_alt - self.alt) / 60.0, 4.0, 15.0)
        descent = -np.clip(self.alt * np.maximum(self.speed, 60) / np.maximum(to_go, 1.0), 2.0, 20.0)
        rate = np.select([self.phase == CLIMB, self.phase == DESCENT], [climb, descent], 0.0)
        self.vrate = np.where(mask, rate, self.vrate)

    def _advance(self, dt: float) -> None:
        rng, d = self.rng, self.dest
        air = self.phase != GROUND
        # ground: wait, taxi slowly in circles, then take off towards the destination
        ground = ~air
        self.ground_timer[ground] -= dt
        taxi = ground & (self.ground_timer < 240)
        self.speed = np.where(ground, np.where(taxi, 8.0, 0.0), self.speed)
        self.track = np.where(taxi, (self.track + 6.0 * dt / 10) % 360, self.track)
        depart = ground & (self.ground_timer <= 0)
        self.phase[depart] = CLIMB
        self.speed[depart] = 80.0
        self.alt[depart] = 10.0
        self.track[depart] = _bearing(self.lat[depart], self.lon[depart], self._ap[d[depart], 0],
                                      self._ap[d[depart], 1])
        air = self.phase != GROUND
        # airborne: steer along the great circle, accelerate towards the speed of this altitude
        self.track = np.where(air, _bearing(self.lat, self.lon, self._ap[d, 0], self._ap[d, 1]), self.track)
        self.speed = np.where(air, self.speed + np.clip(self._target_speed() - self.speed, -dt, dt), self.speed)
        self._vertical_rates(air & (self._anomaly_kind != ANOMALY_KINDS.index("rapid_descent")))
        self.alt = np.where(air, np.maximum(self.alt + self.vrate * dt, 0.0), self.alt)
        levelled = (self.phase == CLIMB) & (self.alt >= self.cruise_alt)
        self.phase[levelled] = CRUISE
        self.alt[levelled] = self.cruise_alt[levelled]
        moving = self.speed > 0
        lat, lon = _destination(self.lat, self.lon, self.track, self.speed * dt)
        self.lat, self.lon = np.where(moving, lat, self.lat), np.where(moving, lon, self.lon)
        # landing: close to the destination and low
        to_go = _distance(self.lat, self.lon, self._ap[d, 0], self._ap[d, 1])
        landed = air & (to_go < np.maximum(self.speed * dt, 2000.0)) & (self.alt < 300)
        if landed.any():
            idx = np.flatnonzero(landed)
            self.phase[idx] = GROUND  # where it touched down, within 2 km of the airport point
            self.alt[idx] = 0.0
            self.speed[idx] = 8.0
            self.vrate[idx] = 0.0
            self.ground_timer[idx] = rng.uniform(300, 1800, size=len(idx))
            self._new_route(idx, d[idx].copy())

    # -- anomalies ------------------------------------------------------------------------------
    def _schedule_anomalies(self) -> None:
        """At the start of each period, pick this period's anomalous aircraft and start steps."""
        if self.step_index % self.anomaly_period or not self.anomaly_rate:
            return
        k = int(round(self.anomaly_rate * self.n))
        if k == 0 and self.rng.random() < self.anomaly_rate * self.n:
            k = 1  # small fleets still see anomalies at the expected rate
        chosen = self.rng.choice(self.n, size=min(k, self.n), replace=False)
        chosen = chosen[self._anomaly_kind[chosen] < 0]
        for i, offset, kind in zip(chosen, self.rng.integers(self.anomaly_period, size=len(chosen)),
                                   self.rng.choice(self._kinds, size=len(chosen)), strict=True):
            self._pending[int(i)] = (self.step_index + int(offset), int(kind))

    def _activate_anomalies(self) -> None:
        pending = self._pending
        for i, (start, kind) in list(pending.items()):
            if start > self.step_index:
                continue
            del pending[i]
            name = ANOMALY_KINDS[kind]
            min_alt, cruising = _APPLICABLE.get(name, (0.0, False))
            if self.phase[i] == GROUND or self.alt[i] < min_alt or (cruising and self.phase[i] != CRUISE):
                continue  # not applicable now: not injected, not labelled
            self._anomaly_kind[i] = kind
            self._anomaly_start[i] = self.step_index
            if name == "emergency_squawk":
                self._emergency_code[i] = str(self.rng.choice(["7500", "7600", "7700"]))
            elif name == "rapid_descent":
                self._anomaly_param[i] = -self.rng.uniform(35, 60)
            elif name == "speed_spike":
                self._anomaly_param[i] = self.rng.uniform(2.0, 3.0)
            elif name == "position_jump":
                self._anomaly_param[i] = self.rng.uniform(0, 360)
            elif name == "altitude_drop":
                self._anomaly_param[i] = self.rng.uniform(50, 250)
            elif name == "slow_cruise":
                self._anomaly_param[i] = self.rng.uniform(60, 90)
            elif name in ("altitude_step", "geo_divergence", "impossible_turn"):
                low, high = {"altitude_step": (150, 400), "geo_divergence": (800, 1500),
                             "impossible_turn": (70, 150)}[name]
                self._anomaly_param[i] = self.rng.uniform(low, high) * self.rng.choice([-1.0, 1.0])
            elif name == "speed_mismatch":
                self._anomaly_param[i] = self.rng.uniform(0.5, 0.65)
        # end the anomalies whose duration is over
        active = np.flatnonzero(self._anomaly_kind >= 0)
        for i in active:
            if self.step_index - self._anomaly_start[i] >= _DURATION[ANOMALY_KINDS[self._anomaly_kind[i]]]:
                self._anomaly_kind[i] = -1

    # -- output ---------------------------------------------------------------------------------
    def _response(self) -> tuple[dict, list[Label]]:
        t = int(self._clock)
        air = self.phase != GROUND
        lat, lon = self.lat.copy(), self.lon.copy()
        baro = np.round(self.alt, 1)
        velocity = self.speed.copy()
        track = self.track.copy()
        # GNSS altitude: the true altitude, whatever the barometric report says
        geo = np.round(self.alt + self._geo_offset, 1)
        squawk = self.squawk.copy()
        labels = []
        for i in np.flatnonzero(self._anomaly_kind >= 0):
            name = ANOMALY_KINDS[self._anomaly_kind[i]]
            p = self._anomaly_param[i]
            if name == "emergency_squawk":
                squawk[i] = self._emergency_code[i]
            elif name == "rapid_descent":
                self.vrate[i] = p  # a real descent: _advance applies it to the altitude
            elif name == "speed_spike":
                velocity[i] = max(velocity[i] * p, 450.0 + 10 * p)
            elif name == "position_jump":
                lat[i], lon[i] = _destination(lat[i], lon[i], p, self.rng.uniform(55_000, 165_000))
            elif name == "altitude_drop":
                baro[i] = round(p, 1)
            elif name == "slow_cruise":
                velocity[i] = p
            elif name == "altitude_step":
                baro[i] = round(baro[i] + p, 1)
            elif name == "geo_divergence":
                geo[i] = round(geo[i] + p, 1)
            elif name == "speed_mismatch":
                velocity[i] = velocity[i] * p
            elif name == "impossible_turn":
                track[i] = (track[i] + p) % 360.0
            labels.append(Label(self.icao24[i], t, name))
        cols = (
            self.icao24.tolist(), self.callsign.tolist(), self.country.tolist(),
            np.round(lon, 5).tolist(), np.round(lat, 5).tolist(), baro.tolist(), (~air).tolist(),
            np.round(velocity, 2).tolist(), np.round(track, 2).tolist(), np.round(self.vrate, 2).tolist(),
            geo.tolist(), squawk.tolist(), self.category.tolist(),
        )
        rows = [
            [icao, cs, country, t, t, lo, la, None if ground else b, ground, v, trk, None if ground else vr,
             None, None if ground else g, sq, False, 0, cat]
            for icao, cs, country, lo, la, b, ground, v, trk, vr, g, sq, cat in zip(*cols, strict=True)
        ]
        return {"time": t, "states": rows}, labels

    def iter_snapshots(self, n: int | None) -> Iterator[tuple[dict, list[Label]]]:
        """``n`` snapshots (None = forever) with the labels of each one."""
        produced = 0
        while n is None or produced < n:
            self._schedule_anomalies()
            self._activate_anomalies()
            response, labels = self._response()
            yield response, labels
            produced += 1
            self._advance(self.interval_s)
            self._clock += self.interval_s
            self.step_index += 1

    def snapshots(self, n: int | None) -> Iterator[dict]:
        """``n`` OpenSky-format responses; their labels accumulate in ``self.labels``."""
        for response, labels in self.iter_snapshots(n):
            self.labels.extend(labels)
            yield response


class LabelWriter:
    """CSV ``icao24,time_position,kind``, one row per anomalous state, appended as they come."""

    def __init__(self, path: str | os.PathLike):
        self._fh = open(path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._fh)
        self._csv.writerow(["icao24", "time_position", "kind"])
        self.rows = 0

    def write(self, labels: list[Label]) -> None:
        for label in labels:
            self._csv.writerow([label.icao24, label.time_position, label.kind])
        self.rows += len(labels)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def write_labels(labels: list[Label], path: str | os.PathLike) -> None:
    writer = LabelWriter(path)
    writer.write(labels)
    writer.close()
