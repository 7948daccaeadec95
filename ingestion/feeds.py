"""Feeding Kafka from OpenSky, a replay or the simulator: the pacing, stopping and counting
behind ``opensky-lakehouse produce`` (``lakehouse.app.commands.produce``).

Shifted or simulated times never run ahead of the wall clock (silver rejects a position later
than its Kafka append time): a looped replay's first pass is placed so that at ``--speedup N`` it
catches up with the clock as it ends, and from then on the pace is real time; a simulation at
``--speedup`` above 1 starts as far in the past as its ``--snapshots`` need, and otherwise waits
for the clock.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from lakehouse.records import FIELD_INDEX

log = logging.getLogger("ingestion")
REPLAY_GAP_S = 10  # between the last snapshot of a pass and the first of the next (--loop)



def parse_speedup(text: str | None) -> float | None:
    """``"max"`` -> None (no pacing), ``"10"`` -> 10.0."""
    if text is None:
        return 1.0
    if text.strip().lower() == "max":
        return None
    value = float(text)
    if value <= 0:
        raise ValueError
    return value


class Stop:
    """Set by SIGINT/SIGTERM; ``wait(s)`` sleeps until then and returns True when stopping."""

    def __init__(self):
        self.event = threading.Event()
        self.signal: str | None = None

    def install(self) -> None:
        def handler(signum, _frame):
            self.signal = signal.Signals(signum).name
            self.event.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    def wait(self, seconds: float) -> bool:
        return self.event.wait(max(0.0, seconds))

    def is_set(self) -> bool:
        return self.event.is_set()


_TIMES = (FIELD_INDEX["time_position"], FIELD_INDEX["last_contact"])
_ICAO24 = FIELD_INDEX["icao24"]


def _shifted(row: list, offset: int) -> list:
    row = list(row)
    for i in _TIMES:
        if row[i] is not None:
            row[i] += offset
    return row


def shift_response(response: dict, offset: int) -> dict:
    """A copy of ``response`` with ``time``, ``time_position`` and ``last_contact`` moved by ``offset`` s."""
    if not offset:
        return response
    states = response.get("states")
    if states is not None:
        states = [_shifted(row, offset) for row in states]
    return {**response, "time": response["time"] + offset, "states": states}


class Emitter:
    """Sends responses to Kafka within the bounds, records them, logs progress."""

    def __init__(self, producer, recorder, max_records: int | None, log_every_s: float):
        self.producer = producer
        self.recorder = recorder
        self.max_records = max_records
        self.log_every_s = log_every_s
        self.responses = 0
        self.states = 0
        self.sent = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_log = self.started

    @property
    def full(self) -> bool:
        return self.max_records is not None and self.states >= self.max_records

    def emit(self, response: dict) -> int:
        states = response.get("states") or []
        if self.max_records is not None and self.states + len(states) > self.max_records:
            keep = self.max_records - self.states
            response = {**response, "states": states[:keep] or None}
            states = states[:keep]
        if self.recorder is not None:
            self.recorder.write(response)
        self.producer.send_response(response)
        self.responses += 1
        self.states += len(states)
        return len(states)

    def flush(self) -> tuple[int, int]:
        delivery = self.producer.flush()
        self.sent += delivery.sent
        self.failed += delivery.failed
        return delivery.sent, delivery.failed

    def progress(self, what: str, force: bool = False, next_at: float | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_log < self.log_every_s:
            return
        self._last_log = now
        self.flush()
        rate = self.states / max(now - self.started, 1e-9)
        nxt = "" if next_at is None else f", next snapshot in {max(0.0, next_at - now):.1f} s"
        log.info("%s: %d snapshots, %d states, %d sent, %d failed (%.0f records/s)%s",
                 what, self.responses, self.states, self.sent, self.failed, rate, nxt)


def _paced(items, speedup: float | None, stop: Stop, interval_of, offset: float | None = None):
    """Yield items, sleeping so that item times advance ``speedup`` times faster than the wall clock.

    With ``offset`` (seconds added to an item's time when it is sent), an item whose time would
    be later than the wall clock waits for it: the pace drops to real time rather than send a
    time from the future.
    """
    start_wall = time.monotonic()
    first = None
    for item in items:
        t = interval_of(item)
        if first is None:
            first = t
        if speedup is not None:
            due = start_wall + (t - first) / speedup
            if stop.wait(due - time.monotonic()):
                return
        if offset is not None and stop.wait(t + offset - time.time()):
            return
        if stop.is_set():
            return
        yield item


def _behind(span: float, speedup: float | None) -> float:
    """How far in the past a run of ``span`` seconds of item times played at ``speedup`` must start
    so that no item's time is later than the moment it is sent, and the last one is sent on time."""
    return span if speedup is None else span * (1 - 1 / speedup) if speedup > 1 else 0


def catch_up_offset(first: int, last: int, speedup: float | None, now: float) -> int:
    """The shift of a replay's first pass (times ``first``..``last``) played at ``speedup`` so
    that its times stay at or behind the wall clock and reach it when the pass ends: the pass
    starts ``(last - first) * (1 - 1 / speedup)`` seconds in the past (all of it at ``max``,
    none at real time or slower)."""
    span = last - first
    behind = _behind(span, speedup)
    return int(now - behind) - first


def _replay_span(paths) -> tuple[int, int] | None:
    from ingestion.replay import ReplayStats, read_replay

    first = last = None
    for response in read_replay(paths, ReplayStats()):
        first = response["time"] if first is None else first
        last = response["time"]
    return None if first is None else (first, last)


def run_replay(args, emitter: Emitter, stop: Stop, speedup) -> int:
    from ingestion.replay import ReplayStats, read_replay

    if not args.path:
        raise SystemExit("produce: --source replay needs --path FILE [FILE...]")
    stats = ReplayStats()
    offset = 0
    passes = 0
    if args.loop:
        span = _replay_span(args.path)
        if span is not None:
            offset = catch_up_offset(*span, speedup, time.time())
            log.info("replay: the first pass starts %+d s from now and catches up with the clock as it ends",
                     span[0] + offset - int(time.time()))
    while True:
        first_time = last_time = None
        stream = read_replay(args.path, stats)
        for response in _paced(stream, speedup, stop, lambda r: r["time"], offset if args.loop else None):
            if first_time is None:
                first_time = response["time"]
            last_time = response["time"]
            emitter.emit(shift_response(response, offset) if args.loop else response)
            emitter.progress("replay")
            if emitter.full or _over(args, emitter):
                break
        passes += 1
        if not args.loop or stop.is_set() or emitter.full or _over(args, emitter) or first_time is None:
            break
        offset += (last_time - first_time) + REPLAY_GAP_S
        log.info("replay: pass %d done; next pass shifted by %+d s", passes, offset)
    if stats.malformed:
        log.warning("replay: %d malformed line(s) skipped: %s", stats.malformed, ", ".join(stats.malformed_where[:5]))
    return 0


def simulation_start(snapshots: int | None, interval_s: float, speedup: float | None, now: float) -> int:
    """The first snapshot's time of a simulation: now (on the interval grid), or, at ``--speedup``
    above 1 with a number of snapshots, as far in the past as it takes for the last one to be
    sent no later than its own time."""
    span = (snapshots - 1) * interval_s if snapshots else 0
    behind = _behind(span, speedup)
    return int((now - behind) // interval_s * interval_s)


def run_simulate(args, settings, emitter: Emitter, stop: Stop, speedup) -> int:
    from ingestion.simulator import ANOMALY_KINDS, RULE_KINDS, LabelWriter, Simulator

    cfg = settings.simulator
    start = (args.start_time if args.start_time is not None
             else simulation_start(args.snapshots, cfg.interval_s, speedup, time.time()))
    sim = Simulator(
        seed=cfg.seed if args.seed is None else args.seed,
        aircraft=cfg.aircraft if args.aircraft is None else args.aircraft,
        anomaly_rate=cfg.anomaly_rate if args.anomaly_rate is None else args.anomaly_rate,
        interval_s=cfg.interval_s, start_time=start, ground_fraction=cfg.ground_fraction,
        kinds=ANOMALY_KINDS if getattr(args, "anomaly_kinds", "rules") == "all" else RULE_KINDS,
    )
    log.info("simulate: %d aircraft, seed %s, anomaly rate %g, a snapshot every %g s from %d, speedup %s",
             sim.n, cfg.seed if args.seed is None else args.seed, sim.anomaly_rate, cfg.interval_s, start,
             "max" if speedup is None else f"{speedup:g}x")
    labels = LabelWriter(args.labels) if args.labels else None
    try:
        pairs = _paced(sim.iter_snapshots(args.snapshots), speedup, stop, lambda p: p[0]["time"], offset=0)
        for response, snapshot_labels in pairs:
            emitter.emit(response)
            if labels is not None:
                kept = {row[_ICAO24] for row in response["states"] or ()}
                labels.write([label for label in snapshot_labels if label.icao24 in kept])
            emitter.progress("simulate")
            if emitter.full or _over(args, emitter):
                break
    finally:
        if labels is not None:
            labels.close()
            log.info("simulate: %d anomaly labels written to %s", labels.rows, args.labels)
    return 0


def run_opensky(args, settings, emitter: Emitter, stop: Stop) -> int:
    import requests

    from ingestion.opensky import AuthError, OpenSkyClient, RequestError, TokenManager
    from ingestion.poller import Poller

    cfg = settings.opensky
    if args.bbox:
        cfg = settings.replace(opensky={"bbox": args.bbox}).opensky  # a wrong --bbox: ConfigError, exit 2
    session = requests.Session()
    tokens = None
    if settings.secrets.has_opensky_credentials:
        tokens = TokenManager(cfg.token_url, settings.secrets.opensky_client_id,
                              settings.secrets.opensky_client_secret, session, timeout_s=cfg.timeout_s,
                              margin_s=cfg.token_refresh_margin_s)
    client = OpenSkyClient(cfg.api_url, tokens=tokens, session=session, timeout_s=cfg.timeout_s)

    def sink(response: dict) -> tuple[int, int]:
        emitter.emit(response)
        return emitter.flush()

    poller = Poller(client, sink, cfg, stop=stop.event)
    try:
        stats = poller.run(max_polls=args.max_polls, duration_s=args.duration)
    except (AuthError, RequestError) as exc:
        log.error("opensky: %s", exc)
        return 1
    log.info("opensky: %d polls (%d ok, %d malformed, %d given up, %d rate limited, %d retries)",
             stats.polls, stats.polls_ok, stats.malformed, stats.polls_given_up, stats.rate_limited, stats.retries)
    return 0


def _over(args, emitter: Emitter) -> bool:
    return args.duration is not None and time.monotonic() - emitter.started >= args.duration


