"""Credit-aware polling of OpenSky: one ``/states/all`` call per interval, into a sink.

``Poller.run()`` says at start which interval it chose and why (:func:`plan_interval`), then
polls until stopped or a bound is reached, logging one line per poll: states, sent, failed,
credits left, next poll. Failure handling, each bounded:

- 429: waits ``X-Rate-Limit-Retry-After-Seconds`` (capped by ``opensky.max_retry_after_s``)
  and logs the local time at which polling resumes;
- timeout, connection error, 5xx: exponential backoff with full jitter
  (``backoff_base_s * 2**attempt``, capped at ``backoff_max_s``), at most ``max_retries``
  retries, then this poll is given up (counted) and the next one is scheduled;
- malformed or truncated body: counted, logged, skipped (no retry: the next poll has fresher data);
- credentials refused: :class:`~ingestion.opensky.AuthError` propagates (nothing to retry).

With ``X-Rate-Limit-Remaining`` known, the interval stretches when needed so the remaining
credits last until the budget renews (assumed at 00:00 UTC). Clock and sleep are injectable so
tests run minutes of polling in milliseconds; ``sleep`` returns True when asked to stop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ingestion.opensky import (
    MalformedBody,
    OpenSkyClient,
    Plan,
    RateLimited,
    TransientError,
    plan_interval,
)

log = logging.getLogger(__name__)


@dataclass
class PollStats:
    polls: int = 0
    polls_ok: int = 0
    polls_given_up: int = 0
    malformed: int = 0
    rate_limited: int = 0
    retries: int = 0
    states: int = 0
    sent: int = 0
    failed: int = 0
    remaining: int | None = None
    history: list[str] = field(default_factory=list)  # one word per poll: ok, malformed, given_up


def local_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s).astimezone().strftime("%H:%M:%S %Z")


def _seconds_to_utc_midnight(now: float) -> float:
    return 86400.0 - (now % 86400.0)


class Poller:
    """Poll ``client`` and hand each response to ``sink(response) -> (sent, failed)``."""

    def __init__(self, client: OpenSkyClient, sink: Callable[[dict], tuple[int, int]], opensky_settings,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], bool] | None = None,
                 rng: random.Random | None = None, stop: threading.Event | None = None):
        self.client = client
        self.sink = sink
        self.cfg = opensky_settings
        from ingestion.opensky import parse_bbox

        self.bbox = parse_bbox(opensky_settings.bbox)
        self.clock = clock
        self.stop = stop or threading.Event()
        self.sleep = sleep or self.stop.wait
        self.rng = rng or random.Random()
        self.stats = PollStats()
        self.plan: Plan = plan_interval(self.bbox, client.authenticated, opensky_settings.daily_credits,
                                        opensky_settings.poll_interval_s)

    def backoff_s(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)]."""
        ceiling = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2 ** attempt))
        return self.rng.uniform(0, ceiling)

    def interval_s(self) -> float:
        interval = self.plan.interval_s
        remaining = self.stats.remaining
        if remaining is not None and not self.cfg.poll_interval_s:
            # make the credits left last until the budget renews
            needed = _seconds_to_utc_midnight(self.clock()) * self.plan.cost / max(remaining, 1)
            interval = max(interval, needed)
        return interval

    def fetch(self) -> dict | None:
        """One poll with its retries: the response, or None (given up or malformed)."""
        attempt = 0
        while True:
            try:
                result = self.client.states(self.bbox, self.cfg.extended)
            except RateLimited as exc:
                self.stats.rate_limited += 1
                if exc.remaining is not None:
                    self.stats.remaining = exc.remaining
                wait = exc.retry_after_s if exc.retry_after_s is not None else self.backoff_s(attempt)
                wait = min(float(wait), self.cfg.max_retry_after_s)
                log.warning("opensky: rate limited (429), credits exhausted; waiting %.0f s, polling resumes"
                            " at %s (local time)", wait, local_time(self.clock() + wait))
            except TransientError as exc:
                wait = self.backoff_s(attempt)
                if attempt < self.cfg.max_retries:
                    log.warning("opensky: %s; retry %d/%d in %.1f s", exc, attempt + 1, self.cfg.max_retries, wait)
            except MalformedBody as exc:
                self.stats.malformed += 1
                self.stats.history.append("malformed")
                log.warning("opensky: malformed response skipped (%s); %d so far", exc, self.stats.malformed)
                return None
            else:
                if result.remaining is not None:
                    self.stats.remaining = result.remaining
                self.stats.history.append("ok")
                return result.response
            if attempt >= self.cfg.max_retries:
                self.stats.polls_given_up += 1
                self.stats.history.append("given_up")
                log.error("opensky: poll given up after %d retries; next poll as scheduled", attempt)
                return None
            attempt += 1
            self.stats.retries += 1
            if self.sleep(wait):
                return None

    def run(self, max_polls: int | None = None, duration_s: float | None = None,
            on_response: Callable[[dict], None] | None = None) -> PollStats:
        """Poll until stopped, ``max_polls`` polls or ``duration_s`` seconds."""
        log.info("opensky: %s mode, %s; polling every %.1f s: %s",
                 "authenticated" if self.client.authenticated else "anonymous",
                 "global" if self.bbox is None else f"bbox {self.cfg.bbox}", self.plan.interval_s, self.plan.reason)
        started = self.clock()
        while not self.stop.is_set():
            if max_polls is not None and self.stats.polls >= max_polls:
                break
            if duration_s is not None and self.clock() - started >= duration_s:
                break
            poll_started = self.clock()
            self.stats.polls += 1
            response = self.fetch()
            states = sent = failed = 0
            if response is not None:
                if on_response is not None:
                    on_response(response)
                states = len(response.get("states") or ())
                sent, failed = self.sink(response)
                self.stats.polls_ok += 1
                self.stats.states += states
                self.stats.sent += sent
                self.stats.failed += failed
            next_at = poll_started + self.interval_s()
            credits = "unknown" if self.stats.remaining is None else str(self.stats.remaining)
            log.info("poll %d: %d states, %d sent, %d failed, credits left %s, next poll %s (in %.0f s)",
                     self.stats.polls, states, sent, failed, credits, local_time(next_at),
                     max(0.0, next_at - self.clock()))
            last = max_polls is not None and self.stats.polls >= max_polls
            if not last and self.sleep(max(0.0, next_at - self.clock())):
                break
        return self.stats
