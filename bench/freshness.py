"""Freshness: delay from Kafka append to visibility in ``gold.live_flights``, with ``run all`` streaming.

Per rate, one fresh demo-like stack (``--quick``: one stack, the rates in turn):
``python -m lakehouse run all`` (a subprocess, the streaming triggers of the settings) and, when
``python -m lakehouse dashboard``. In this process a
producer thread runs the simulator in real time through the ingestion producer: ``rate x
simulator.interval_s`` aircraft, one snapshot every ``simulator.interval_s`` seconds (1,000
states/s = 10,000 aircraft reporting every 10 s, about the whole world's ADS-B traffic; above
:data:`MAX_AIRCRAFT` the aircraft report more often instead), or, for the ``recorded`` rates,
real recorded tracks (:func:`recorded_fleet`) at the same pace. For each snapshot it logs
``produced_at`` (the value written into every record, taken just before the first send) and
when the broker acknowledged the last.

A poller reads the Delta log of ``gold.live_flights`` with delta-rs every ``poll_s``. For each
new version it takes the commit timestamp (``commitInfo.timestamp``: the moment the version
became readable, within a few ms of the log file's rename) and the ``(icao24, event_time)`` rows.
An aircraft whose ``event_time`` moved from ``t0`` to ``t1`` makes every one of its simulated
states with ``t0 < time_position <= t1`` visible in that commit (a state superseded within one
gold batch is visible as its successor); its delay is ``commit time - produced_at`` of the
snapshot. Percentiles are over states (each aircraft in each snapshot counts once).

The stack warms up until ``gold.live_flights`` has a first version plus ``warmup_s``; then
``runs`` consecutive windows of ``window_s`` seconds each are measured (a state belongs to the
window its snapshot was produced in). After the last window the producer goes on (steady load)
until every measured state is visible or ``drain_s`` passes; states still not visible are
counted as ``unseen`` and their delay so far is included (a lower bound) so a stack that cannot
keep up shows it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.env import REPO
from bench.figures import figure, weighted_percentile

log = logging.getLogger("bench")


@dataclass
class Snapshot:
    time: int  # time_position of every state in it (epoch s)
    produced_at_ms: int
    acked_at_ms: int
    states: int
    visible: int = 0


@dataclass
class Contribution:
    produced_at_ms: int
    commit_ms: int
    states: int


@dataclass
class ProducerLog:
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    error: str | None = None
    behind_s: float = 0.0  # worst lateness of a snapshot against its schedule

    def times(self) -> list[int]:
        with self.lock:
            return sorted(self.snapshots)


def produce_live(settings, responses: Iterator[dict], source: str, stop: threading.Event, plog: ProducerLog) -> None:
    """Real-time snapshots -> Kafka until ``stop``; every snapshot logged in ``plog``.

    ``responses``: ``/states/all`` responses, each sent at its ``time`` (every state's
    ``time_position``); ``source``: the records' ``source`` (``simulator``, ``replay``)."""
    from ingestion.producer import StateProducer

    try:
        producer = StateProducer(settings, source)
    except Exception as exc:  # noqa: BLE001 - reported by the section, which then stops
        plog.error = f"{type(exc).__name__}: {exc}"
        return
    try:
        for response in responses:
            delay = response["time"] - time.time()
            if stop.wait(max(0.0, delay)):
                return
            plog.behind_s = max(plog.behind_s, -delay)
            produced_at = int(time.time() * 1000)
            n = producer.send_response(response, produced_at)
            delivery = producer.flush()
            acked = int(time.time() * 1000)
            if delivery.failed or delivery.pending:
                plog.error = f"{delivery.failed} failed, {delivery.pending} pending deliveries"
            with plog.lock:
                plog.snapshots[response["time"]] = Snapshot(response["time"], produced_at, acked, n)
    except Exception as exc:  # noqa: BLE001 - reported by the section
        plog.error = f"{type(exc).__name__}: {exc}"
    finally:
        producer.close(timeout=10)


def next_slot(interval_s: float) -> int:
    """The first snapshot time of a producer starting now: the next multiple of ``interval_s``."""
    return int(time.time() // interval_s * interval_s + interval_s)


# Real recorded tracks: 30 minutes of the `traffic` library's quickstart sample (OpenSky data
# around Paris, 2021-10-07; origin and conversion in tests/fixtures/README.md), 33 states a
# snapshot on average.
RECORDING = REPO / "tests" / "fixtures" / "quickstart_excerpt.jsonl.gz"
# Addresses of the recorded fleet's copies start here (0xF00000 up: no country's ICAO block, so
# never an address of the simulator's fleet sharing a stack).
RECORDED_BASE = 0xF00000


def recorded_fleet(responses: list[dict], rate: int, interval_s: float, start: int) -> tuple[int, Iterator[dict]]:
    """Real recorded tracks at ``rate`` states/s: ``(aircraft, snapshots)``.

    The recording's snapshots are sent one per ``interval_s`` from ``start``, each as ``copies``
    copies (``rate x interval_s`` states a snapshot, rounded to whole copies), and looped. Every
    aircraft of every copy is a distinct aircraft (its own ICAO address from
    :data:`RECORDED_BASE`), and so is each stretch of an aircraft's recording without a gap, in
    each pass over the recording: the watcher's accounting (an aircraft reports in every
    snapshot until it stops) holds, and no loop or gap shows as a position jump. States keep
    their recorded position, altitude, speeds and country; ``time_position`` and
    ``last_contact`` become the snapshot's time, as the simulator's do. States without a position
    (which silver quarantines, never visible on the map) are left out.
    """
    from lakehouse.records import FIELD_INDEX

    icao24, time_position, last_contact = FIELD_INDEX["icao24"], FIELD_INDEX["time_position"], FIELD_INDEX["last_contact"]
    lat, lon = FIELD_INDEX["latitude"], FIELD_INDEX["longitude"]
    frames: list[list[tuple[int, list]]] = []
    stretch: dict[str, tuple[int, int]] = {}  # icao24 -> (last frame seen in, its stretch id)
    stretches = 0
    for k, response in enumerate(responses):
        rows = []
        for row in response.get("states") or ():
            if row[time_position] is None or row[lat] is None or row[lon] is None:
                continue
            seen = stretch.get(row[icao24])
            if seen is None or seen[0] != k - 1:
                seen, stretches = (k, stretches), stretches + 1
            stretch[row[icao24]] = (k, seen[1])
            rows.append((seen[1], row))
        frames.append(rows)
    per_frame = sum(map(len, frames)) / max(1, len(frames))
    if not per_frame:
        raise ValueError("the recording holds no state with a position")
    copies = max(1, round(rate * interval_s / per_frame))

    def snapshots() -> Iterator[dict]:
        k = 0
        while True:
            t = int(start + k * interval_s)
            lap, i = divmod(k, len(frames))
            states = []
            for copy in range(copies):
                first = RECORDED_BASE + (lap * copies + copy) * stretches
                for j, row in frames[i]:
                    state = list(row)
                    state[icao24], state[time_position], state[last_contact] = f"{(first + j) % (1 << 24):06x}", t, t
                    states.append(state)
            yield {"time": t, "states": states}
            k += 1

    return round(copies * per_frame), snapshots()


class LiveFlightsWatcher:
    """Follow the versions of ``gold.live_flights``; turn each into delay contributions."""

    def __init__(self, path: str, storage_options: dict):
        self.path = path
        self.options = storage_options
        self.version = -1
        self.prev = None  # pandas Series icao24 -> event_time (epoch s)
        self.contributions: list[Contribution] = []
        self.detect_lag_ms: list[int] = []
        self.first_version_at: float | None = None

    def _commit_times(self, dt, since: int) -> dict[int, int]:
        wanted = dt.version() - since
        return {h["version"]: int(h["timestamp"]) for h in dt.history(max(wanted, 1)) if "version" in h}

    def poll(self, plog: ProducerLog) -> int:
        """Read every version newer than the last one seen; return how many."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            dt = DeltaTable(self.path, storage_options=self.options)
        except TableNotFoundError:
            return 0
        latest = dt.version()
        if latest <= self.version:
            return 0
        seen_ms = int(time.time() * 1000)
        commits = self._commit_times(dt, self.version)
        times = plog.times()
        new = 0
        for v in range(self.version + 1, latest + 1):
            if v not in commits:
                continue
            table = DeltaTable(self.path, version=v, storage_options=self.options).to_pyarrow_table(
                columns=["icao24", "event_time"])
            if table.num_rows == 0:
                continue  # the empty table created before the first batch
            self._account(table, commits[v], times, plog)
            self.detect_lag_ms.append(seen_ms - commits[v])
            new += 1
        self.version = latest
        if new and self.first_version_at is None:
            self.first_version_at = time.time()
        return new

    def _account(self, table, commit_ms: int, times: list[int], plog: ProducerLog) -> None:
        import bisect

        import pandas as pd
        import pyarrow as pa

        micros = table.column("event_time").cast(pa.timestamp("us", "UTC")).cast(pa.int64())
        secs = micros.to_numpy(zero_copy_only=False) // 1_000_000
        cur = pd.Series(secs, index=table.column("icao24").to_pylist()).groupby(level=0).max()
        if self.prev is None:
            self.prev = cur  # the baseline: what was visible before we looked is not counted
            return
        before = self.prev.reindex(cur.index)
        moved = cur[(before.isna()) | (cur > before)]
        starts = before.reindex(moved.index)
        pairs = pd.DataFrame({"t0": starts.fillna(-1).astype("int64"), "t1": moved.astype("int64")})
        for (t0, t1), n in pairs.value_counts().items():
            lo = bisect.bisect_right(times, t0) if t0 >= 0 else bisect.bisect_left(times, t1)
            hi = bisect.bisect_right(times, t1)
            with plog.lock:
                for t in times[lo:hi]:
                    snap = plog.snapshots[t]
                    snap.visible += int(n)
                    self.contributions.append(Contribution(snap.produced_at_ms, commit_ms, int(n)))
        # an aircraft that left the live window keeps its last time: it may come back
        self.prev = pd.concat([self.prev, cur]).groupby(level=0).max()


def window_figures(contribs: list[Contribution], plog: ProducerLog, lo_ms: int, hi_ms: int, end_ms: int) -> dict:
    """p50/p95/max delay (s) of the states produced in [lo_ms, hi_ms)."""
    delays, weights = [], []
    for c in contribs:
        if lo_ms <= c.produced_at_ms < hi_ms:
            delays.append((c.commit_ms - c.produced_at_ms) / 1000)
            weights.append(c.states)
    with plog.lock:
        snaps = [s for s in plog.snapshots.values() if lo_ms <= s.produced_at_ms < hi_ms]
    unseen = sum(max(0, s.states - s.visible) for s in snaps)
    for s in snaps:  # not visible by the end: the delay so far, a lower bound
        if s.states > s.visible:
            delays.append((end_ms - s.produced_at_ms) / 1000)
            weights.append(s.states - s.visible)
    produced = sum(s.states for s in snaps)
    send = [(s.acked_at_ms - s.produced_at_ms) / 1000 for s in snaps]
    return {
        "p50_s": weighted_percentile(delays, weights, 0.50),
        "p95_s": weighted_percentile(delays, weights, 0.95),
        "max_s": max(delays) if delays else None,
        "states": produced,
        "snapshots": len(snaps),
        "unseen_states": unseen,
        "send_s_max": max(send) if send else None,
    }


# The simulator's fleet set-up does not finish for 100,000 aircraft (its ICAO address collision
# redraw never ends once a country's block runs out); 50,000 set up in 0.3 s. Higher rates
# report more often instead: 10,000 states/s = 50,000 aircraft every 5 s.
MAX_AIRCRAFT = 50_000


def fleet_for(rate: int, interval_s: float) -> tuple[int, float]:
    """(aircraft, report interval s) producing ``rate`` states/s at ``interval_s`` if possible."""
    aircraft = max(1, int(round(rate * interval_s)))
    if aircraft <= MAX_AIRCRAFT:
        return aircraft, interval_s
    return MAX_AIRCRAFT, MAX_AIRCRAFT / rate


class Stack:
    """``run all`` streaming (+ the dashboard) on one fresh lakehouse root, memory sampled."""

    def __init__(self, env, sizes, label: str, sampler):
        from lakehouse.catalog import table_path
        from lakehouse.delta_rs import delta_uri, storage_options
        from lakehouse.net import free_port

        self.env, self.sizes, self.label, self.sampler = env, sizes, label, sampler
        self.timings_log = str(env.work / f"timings-{label}.jsonl")
        self.settings = env.settings_for(f"freshness-{label}", dashboard={"port": free_port()},
                                         streaming={"timings_log": self.timings_log})
        self.log_name = f"run-all-{label}.log"
        self.watcher = LiveFlightsWatcher(delta_uri(table_path(self.settings, "gold.live_flights")),
                                          storage_options(self.settings))
        self.plog = ProducerLog()
        self.proc = self.dash = None
        self.stopped: dict = {}
        self.started = time.time()

    def __enter__(self) -> Stack:
        self.proc = self.env.spawn(self.settings, ["run", "all"], self.log_name)
        self.sampler.track("spark (run all: python + JVM)", self.proc.pid)
        self.dash = self.env.spawn(self.settings, ["dashboard"], f"dashboard-{self.label}.log")
        self.sampler.track("dashboard", self.dash.pid)
        return self

    def __exit__(self, *exc) -> None:
        from bench.env import stop

        self.sampler.sample()
        if self.dash is not None:
            self.sampler.untrack("dashboard")
            stop(self.dash)
        self.sampler.untrack("spark (run all: python + JVM)")
        code = stop(self.proc, timeout=180)
        self.stopped = {"exit": code, "accounting_holds": None}
        try:  # a stop between micro-batches leaves no batch half written: the accounting holds
            from lakehouse.status import accounting

            self.stopped["accounting_holds"] = accounting(self.settings)["holds"]
        except Exception as exc:  # noqa: BLE001 - reported in the results, the figures stand
            self.stopped["error"] = f"{type(exc).__name__}: {exc}"
        log.info("bench: [freshness %s] run all stopped (exit %s), accounting %s", self.label, code,
                 {True: "holds", False: "DOES NOT HOLD", None: "unknown"}[self.stopped["accounting_holds"]])

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"run all exited with {self.proc.returncode}; log tail:\n"
                               f"{self.env.log_tail(self.log_name)}")
        if self.plog.error:
            raise RuntimeError(f"the producer failed: {self.plog.error}")

    def poll_until(self, until: float, done=None) -> None:
        last_log = time.time()
        while time.time() < until:
            self.check()
            self.watcher.poll(self.plog)
            if done is not None and done():
                return
            if time.time() - last_log >= 15:
                last_log = time.time()
                log.info("bench: [freshness %s] gold.live_flights at version %d, %d snapshots sent, producer "
                         "behind %.1f s, %.0f s to go", self.label, self.watcher.version, len(self.plog.snapshots),
                         self.plog.behind_s, until - time.time())
            time.sleep(self.sizes.poll_s)

    def measure(self, rate: int, tracks: str = "simulated") -> dict:
        """Produce at ``rate`` (``tracks``: ``simulated``, or ``recorded``: real tracks, see
        :func:`recorded_fleet`): (first version,) warm-up, ``runs`` windows, drain; figures per window."""
        sizes = self.sizes
        if tracks == "recorded":
            from ingestion.replay import read_replay

            interval = self.settings.simulator.interval_s
            aircraft, responses = recorded_fleet(list(read_replay(RECORDING)), rate, interval, next_slot(interval))
            source = "replay"
        else:
            from ingestion.simulator import Simulator

            # each rate its own seed: a stack shared by two rates sees (almost) disjoint fleets
            aircraft, interval = fleet_for(rate, self.settings.simulator.interval_s)
            responses = Simulator(seed=rate, aircraft=aircraft, interval_s=interval, start_time=next_slot(interval),
                                  anomaly_rate=self.settings.simulator.anomaly_rate).snapshots(None)
            source = "simulator"
        halt = threading.Event()
        self.plog.behind_s = 0.0
        log.info("bench: [freshness %s] producing %s states/s (%s tracks): %s aircraft reporting every %g s",
                 self.label, f"{rate:,}", tracks, f"{aircraft:,}", interval)
        producer = threading.Thread(target=produce_live, args=(self.settings, responses, source, halt, self.plog),
                                    daemon=True)
        producer.start()
        result: dict = {"rate": rate, "tracks": tracks, "aircraft": aircraft, "interval_s": interval,
                        "stack": self.label}
        if tracks == "recorded":
            result["recording"] = str(RECORDING.relative_to(REPO))
        try:
            if self.watcher.first_version_at is None:
                self.poll_until(self.started + sizes.freshness_startup_s,
                                done=lambda: self.watcher.first_version_at is not None)
                if self.watcher.first_version_at is None:
                    raise RuntimeError(f"gold.live_flights had no version {sizes.freshness_startup_s:.0f} s after "
                                       f"start; run all log:\n{self.env.log_tail(self.log_name)}")
                result["startup_s"] = self.watcher.first_version_at - self.started
                log.info("bench: [freshness %s] first gold.live_flights version %.0f s after start", self.label,
                         result["startup_s"])
            t0 = time.time() + sizes.freshness_warmup_s
            windows = [(int((t0 + i * sizes.freshness_window_s) * 1000),
                        int((t0 + (i + 1) * sizes.freshness_window_s) * 1000)) for i in range(sizes.runs)]
            log.info("bench: [freshness %s] warm-up %.0f s, then %d window(s) of %.0f s at %s states/s", self.label,
                     sizes.freshness_warmup_s, sizes.runs, sizes.freshness_window_s, f"{rate:,}")
            self.poll_until(windows[-1][1] / 1000)
            if self.dash is not None:
                result["dashboard_page"] = open_dashboard(self.settings.dashboard.port, self.settings.dashboard.refresh_s)
                log.info("bench: [freshness %s] dashboard page: %s", self.label, result["dashboard_page"])

            def all_visible() -> bool:
                with self.plog.lock:
                    return all(s.visible >= s.states for s in self.plog.snapshots.values()
                               if windows[0][0] <= s.produced_at_ms < windows[-1][1])

            self.poll_until(time.time() + sizes.freshness_drain_s, done=all_visible)
        finally:
            halt.set()
            producer.join(timeout=60)
        end_ms = int(time.time() * 1000)
        result["runs"] = [window_figures(self.watcher.contributions, self.plog, lo, hi, end_ms) for lo, hi in windows]
        from bench import timings

        # where each trigger's time went, over the batches that ran in the measured windows
        result["trigger_split"] = timings.summarize(timings.read(self.timings_log), windows[0][0] / 1000,
                                                    windows[-1][1] / 1000)
        result["producer_behind_s_max"] = self.plog.behind_s
        result["versions"] = self.watcher.version + 1
        lags = sorted(self.watcher.detect_lag_ms)
        result["poll_detect_lag_ms_median"] = lags[len(lags) // 2] if lags else None
        for key in ("p50_s", "p95_s", "max_s"):
            result[key] = figure(r[key] for r in result["runs"])
        for r in result["runs"]:
            log.info("bench: [freshness %s] %s states/s window: %s states, p50 %s s, p95 %s s, max %s s, unseen %d",
                     self.label, f"{rate:,}", f"{r['states']:,}", _fmt(r["p50_s"]), _fmt(r["p95_s"]),
                     _fmt(r["max_s"]), r["unseen_states"])
        return result


def open_dashboard(port: int, refresh_s: float, timeout_s: float = 120.0) -> dict:
    """Open the served dashboard once in headless Chromium, so its memory includes a real session.

    Done after the measured windows (a browser on two cores would slow the pipeline being
    measured), while the stack still runs and memory is still sampled. Needs the dashboard's
    ``bench.browser`` helpers and Debian's chromium; otherwise says why it was not done.
    """
    import os

    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright

        from bench import browser as measure
    except ImportError as exc:
        return {"opened": False, "reason": f"{exc.name or exc} not importable"}
    if not os.path.exists(measure.CHROMIUM):
        return {"opened": False, "reason": f"{measure.CHROMIUM} absent"}
    url = f"http://127.0.0.1:{port}"
    try:
        measure.wait_serving(url, timeout_s)
    except TimeoutError as exc:
        return {"opened": False, "reason": str(exc)}
    try:
        with sync_playwright() as pw:
            browser = measure.launch(pw)
            try:
                page = browser.new_page()
                t0 = time.perf_counter()
                page.goto(url)
                version = measure.shown_version(page, timeout_ms=timeout_s * 1000)
                load_s = time.perf_counter() - t0
                page.wait_for_timeout(2 * refresh_s * 1000)  # two auto-refreshes
            finally:
                browser.close()
    except PlaywrightError as exc:
        return {"opened": False, "reason": str(exc).splitlines()[0][:300]}
    return {"opened": True, "load_s": load_s, "version_shown": version}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def spec_key(rate: int, tracks: str) -> str:
    """A measured rate's key in the results: ``1000`` (simulated), ``1000-recorded``."""
    return str(rate) if tracks == "simulated" else f"{rate}-{tracks}"


def run_section(env, sizes) -> tuple[dict, dict]:
    """Freshness per rate, and the memory peaks of each stack (sampled meanwhile)."""
    from bench.memory import MemorySampler

    freshness: dict = {
        "status": "ok", "unit": "seconds", "runs": sizes.runs, "window_s": sizes.freshness_window_s,
        "warmup_s": sizes.freshness_warmup_s, "measured": __doc__.split("\n\n")[2].replace("\n", " "),
        "triggers": {"pipeline": env.settings.streaming.pipeline_trigger},
        "rates": {},
    }
    memory: dict = {"status": "ok", "unit": "MB", "measured": (
        "peak memory per process tree, sampled from /proc every 0.5 s while each freshness stack runs "
        "(peak_rss_mb: highest sampled sum of VmRSS over the tree, as ps/top count it; peak_pss_mb: the same "
        "with the proportional set size, pages shared by forked workers counted once)"), "rates": {}}
    specs = [(r, "simulated") for r in sizes.freshness_rates] + [(r, "recorded") for r in sizes.recorded_rates]
    stacks = [[spec] for spec in specs] if sizes.stack_per_rate else [specs]
    for stack_specs in stacks:
        label = "+".join(spec_key(*spec) for spec in stack_specs)
        with MemorySampler() as sampler:
            sampler.track("kafka broker", env.broker_pid)
            stack = Stack(env, sizes, label, sampler)
            try:
                with stack:
                    for rate, tracks in stack_specs:
                        freshness["rates"][spec_key(rate, tracks)] = stack.measure(rate, tracks)
            except RuntimeError as exc:
                log.error("bench: [freshness %s] failed: %s", label, exc)
                for rate, tracks in stack_specs:
                    freshness["rates"].setdefault(spec_key(rate, tracks), {"rate": rate, "tracks": tracks,
                                                                         "error": str(exc)[:2000]})
                freshness["status"] = "error"
            for spec in stack_specs:
                freshness["rates"][spec_key(*spec)]["stopped"] = stack.stopped
            peaks = sampler.peaks()
        peaks["total"] = {k: sum(p[k] for p in peaks.values()) for k in ("peak_rss_mb", "peak_pss_mb")}
        memory["rates"][label] = peaks
        log.info("bench: [memory %s] %s", label, ", ".join(f"{k} {v['peak_rss_mb']:.0f} MB" for k, v in peaks.items()))
    return freshness, memory
