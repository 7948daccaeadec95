"""OpenSky REST client: OAuth2 client credentials, ``GET /api/states/all``, credit accounting.

``TokenManager`` posts ``grant_type=client_credentials`` to the token URL, caches the bearer
token and renews it ``token_refresh_margin_s`` before it expires (and once on a 401). Without
credentials the client is anonymous. ``OpenSkyClient.states(bbox, extended)`` returns the parsed
body and the ``X-Rate-Limit-Remaining`` header, or raises:

- :class:`RateLimited` (429, with ``X-Rate-Limit-Retry-After-Seconds``),
- :class:`TransientError` (timeout, connection error, 5xx: worth retrying with backoff),
- :class:`MalformedBody` (not JSON, truncated, wrong shape: skip it),
- :class:`AuthError` / :class:`RequestError` (credentials refused, bad request: stop).

Credits (OpenSky's documented pricing for ``/states/all``): a call costs 1 credit for a box of
up to 25 square degrees, 2 up to 100, 3 up to 400, 4 above or without a box; the daily budget is
400 anonymous, 4,000 registered, 8,000 for feeders. :func:`plan_interval` picks the poll interval
that fits the budget, never faster than the data (10 s anonymous, 5 s authenticated).
Secrets are never logged: exceptions carry the HTTP status and URL, never the request body.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

import requests

from ingestion.states import MalformedResponse, check_response

log = logging.getLogger(__name__)

ANONYMOUS_DAILY_CREDITS = 400
REGISTERED_DAILY_CREDITS = 4000
MIN_INTERVAL_ANONYMOUS_S = 10.0  # anonymous users get 10 s resolution
MIN_INTERVAL_AUTHENTICATED_S = 5.0
REMAINING_HEADER = "X-Rate-Limit-Remaining"
RETRY_AFTER_HEADER = "X-Rate-Limit-Retry-After-Seconds"


class OpenSkyError(Exception):
    """Base of the client's errors."""


class AuthError(OpenSkyError):
    """Credentials refused (token endpoint 400/401, or 401 again after a fresh token)."""


class RequestError(OpenSkyError):
    """A 4xx other than 401/429: the request itself is wrong; retrying will not help."""


class TransientError(OpenSkyError):
    """Timeout, connection error or 5xx: retry with backoff."""


class MalformedBody(OpenSkyError):
    """A 200 whose body is not a complete states response (truncated, not JSON, wrong shape)."""


class RateLimited(OpenSkyError):
    def __init__(self, retry_after_s: float | None, remaining: int | None):
        super().__init__(f"rate limited (429), retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.remaining = remaining


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """``"lamin,lomin,lamax,lomax"`` -> tuple, empty -> None (validated by settings)."""
    if not text or not text.strip():
        return None
    lamin, lomin, lamax, lomax = (float(part) for part in text.split(","))
    return lamin, lomin, lamax, lomax


def credit_cost(bbox: tuple[float, float, float, float] | None) -> int:
    """Credits one ``/states/all`` call costs for this bounding box (None = global)."""
    if bbox is None:
        return 4
    lamin, lomin, lamax, lomax = bbox
    area = (lamax - lamin) * (lomax - lomin)
    for limit, cost in ((25, 1), (100, 2), (400, 3)):
        if area <= limit:
            return cost
    return 4


@dataclass(frozen=True)
class Plan:
    interval_s: float
    cost: int
    daily_credits: int
    reason: str


def plan_interval(bbox, authenticated: bool, daily_credits: int = 0, fixed_interval_s: float = 0) -> Plan:
    """The poll interval that stays within the daily budget, and why it was chosen."""
    cost = credit_cost(bbox)
    account = "authenticated" if authenticated else "anonymous"
    budget = daily_credits or (REGISTERED_DAILY_CREDITS if authenticated else ANONYMOUS_DAILY_CREDITS)
    floor = MIN_INTERVAL_AUTHENTICATED_S if authenticated else MIN_INTERVAL_ANONYMOUS_S
    area = "global" if bbox is None else f"{(bbox[2] - bbox[0]) * (bbox[3] - bbox[1]):.0f} sq deg box"
    budget_interval = 86400.0 * cost / budget
    calls = budget // cost
    if fixed_interval_s:
        interval = max(fixed_interval_s, floor)
        why = f"opensky.poll_interval_s={fixed_interval_s:g} s"
        if fixed_interval_s < floor:
            why += f" is faster than the {account} data resolution, raised to {floor:g} s"
        if interval < budget_interval:
            why += (f"; WARNING: at {cost} credit(s)/call this spends {86400 / interval * cost:.0f} credits/day,"
                    f" over the {budget} budget: expect 429s")
        return Plan(interval, cost, budget, why)
    if budget_interval >= floor:
        interval = budget_interval
        why = (f"{area} costs {cost} credit(s)/call; {budget} credits/day ({account}) allow {calls} calls/day"
               f" = one every {interval:.0f} s")
    else:
        interval = floor
        why = (f"{area} costs {cost} credit(s)/call; {budget} credits/day ({account}) would allow one call every"
               f" {budget_interval:.1f} s, but {account} data changes only every {floor:g} s")
    return Plan(interval, cost, budget, why)


class TokenManager:
    """Client-credentials bearer token, cached and renewed before it expires."""

    def __init__(self, token_url: str, client_id: str, client_secret: str, session: requests.Session,
                 timeout_s: float = 15.0, margin_s: float = 60.0, clock=time.monotonic):
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._session = session
        self._timeout = timeout_s
        self._margin = margin_s
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.fetches = 0

    def __repr__(self) -> str:  # never show the secret or the token
        return f"TokenManager(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self._margin:
                self._fetch()
            return self._token  # type: ignore[return-value]

    def _fetch(self) -> None:
        try:
            response = self._session.post(
                self.token_url,
                data={"grant_type": "client_credentials", "client_id": self.client_id,
                      "client_secret": self._secret},
                timeout=self._timeout,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TransientError(f"token endpoint unreachable ({type(exc).__name__})") from None
        if response.status_code >= 500:
            raise TransientError(f"token endpoint answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise AuthError(
                f"token endpoint {self.token_url} refused the client credentials of client_id "
                f"{self.client_id!r} (HTTP {response.status_code}); check OPENSKY_CLIENT_ID/OPENSKY_CLIENT_SECRET"
            )
        try:
            body = response.json()
            token = body["access_token"]
            expires_in = float(body.get("expires_in", 1800))
        except (ValueError, KeyError, TypeError):
            raise TransientError("token endpoint answered without a usable access_token") from None
        self._token = token
        self._expires_at = self._clock() + expires_in
        self.fetches += 1
        log.info("opensky: new access token for client_id %r, valid %.0f s", self.client_id, expires_in)


@dataclass
class StatesResult:
    response: dict
    remaining: int | None


def _int_header(headers, name: str) -> int | None:
    try:
        return int(float(headers[name]))
    except (KeyError, ValueError, TypeError):
        return None


class OpenSkyClient:
    """``GET {api_url}/states/all`` (anonymous when ``tokens`` is None)."""

    def __init__(self, api_url: str, tokens: TokenManager | None = None, session: requests.Session | None = None,
                 timeout_s: float = 15.0):
        self.api_url = api_url.rstrip("/")
        self.tokens = tokens
        self.session = session or requests.Session()
        self.timeout_s = timeout_s

    @property
    def authenticated(self) -> bool:
        return self.tokens is not None

    def states(self, bbox=None, extended: bool = True) -> StatesResult:
        params: dict[str, object] = {}
        if bbox is not None:
            params.update(zip(("lamin", "lomin", "lamax", "lomax"), bbox, strict=True))
        if extended:
            params["extended"] = 1
        response = self._get(params)
        if response.status_code == 401 and self.tokens is not None:
            # the cached token expired or was revoked early: renew once, then give up
            log.info("opensky: 401 with a cached token; fetching a new token and retrying once")
            self.tokens.invalidate()
            response = self._get(params)
        remaining = _int_header(response.headers, REMAINING_HEADER)
        status = response.status_code
        if status == 429:
            raise RateLimited(_int_header(response.headers, RETRY_AFTER_HEADER), remaining)
        if status == 401:
            raise AuthError("OpenSky answered 401 Unauthorized" + (" with a fresh token" if self.tokens else ""))
        if status >= 500:
            raise TransientError(f"OpenSky answered HTTP {status}")
        if status != 200:
            raise RequestError(f"OpenSky answered HTTP {status} to {response.url}")
        try:
            body = json.loads(response.content)
            check_response(body)
        except (ValueError, MalformedResponse) as exc:
            raise MalformedBody(f"{len(response.content)} bytes, {str(exc)[:160]}") from None
        return StatesResult(body, remaining)

    def _get(self, params) -> requests.Response:
        headers = {}
        if self.tokens is not None:
            headers["Authorization"] = f"Bearer {self.tokens.token()}"
        try:
            return self.session.get(f"{self.api_url}/states/all", params=params, headers=headers,
                                    timeout=self.timeout_s)
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__} after {self.timeout_s:g} s timeout") from None
        except requests.exceptions.ChunkedEncodingError:
            raise MalformedBody("connection closed mid-body") from None
