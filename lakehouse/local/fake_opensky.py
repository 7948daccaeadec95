"""A fake OpenSky API for tests and demos: real HTTP on 127.0.0.1, answers from replay files.

    python -m lakehouse.local.fake_opensky --replay tests/fixtures/quickstart_excerpt.jsonl.gz [--port 0]
        [--client-id ID --client-secret SECRET] [--fault rate_limit --fault truncated ...]

Endpoints:
- ``POST /auth/token`` (OAuth2 client credentials, form-encoded): ``{"access_token", "expires_in"}``;
  400/401 for other grants or credentials.
- ``GET /api/states/all[?lamin&lomin&lamax&lomax&extended=1]``: the next response of the replay
  (filtered to the box), with ``X-Rate-Limit-Remaining``; a Bearer token is checked when sent,
  no token = anonymous. After the last response, ``{"time": <last + 10>, "states": null}``.
- ``POST /_fault/<name>[?count=N]``: queue a fault for the next N calls of ``/api/states/all``.

Faults (each applies to one call, in queue order): ``expired_token`` (401: the token is revoked,
so the client must fetch a new one), ``rate_limit`` (429 with ``X-Rate-Limit-Retry-After-Seconds``),
``server_error`` (500), ``slow`` (answers after ``slow_s``, beyond a short client timeout),
``truncated`` (a 200 whose JSON body is cut in half), ``null_states`` (a 200 with
``"states": null``), ``short_rows`` (the next response with 17-field rows, no ``category``).
A fault that serves no replay data does not advance the replay, so the client loses nothing by
surviving it; ``served`` lists exactly the responses delivered complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ingestion.opensky import REMAINING_HEADER, RETRY_AFTER_HEADER, credit_cost
from ingestion.replay import read_replay
from lakehouse.records import FIELD_INDEX, MIN_STATE_FIELDS

log = logging.getLogger(__name__)

FAULTS = ("expired_token", "rate_limit", "server_error", "slow", "truncated", "null_states", "short_rows")
TOKEN_PATH = "/auth/token"
STATES_PATH = "/api/states/all"


class FakeOpenSky:
    """The server; ``with FakeOpenSky(responses) as fake: fake.api_url, fake.token_url``."""

    def __init__(self, responses: list[dict], client_id: str | None = None, client_secret: str | None = None,
                 port: int = 0, token_ttl_s: float = 1800, retry_after_s: int = 2, slow_s: float = 3.0,
                 daily_credits: int = 4000):
        self.responses = responses
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.retry_after_s = retry_after_s
        self.slow_s = slow_s
        self.credits = daily_credits
        self.faults: deque[str] = deque()
        self.cursor = 0
        self.served: list[dict] = []
        self.requests: list[str] = []  # one entry per states call: "ok", or the fault applied
        self.token_requests = 0
        self.token_left_s: list[float] = []  # per authorised states call: the token's lifetime left
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @classmethod
    def from_replay(cls, paths, **kwargs) -> FakeOpenSky:
        return cls(list(read_replay(paths)), **kwargs)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api"

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    def inject(self, fault: str, count: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; allowed: {', '.join(FAULTS)}")
        with self._lock:
            self.faults.extend([fault] * count)

    def start(self) -> FakeOpenSky:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-opensky", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeOpenSky:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- request handling (called from the handler threads) ---------------------------------
    def issue_token(self, form: dict[str, str]) -> tuple[int, dict]:
        with self._lock:
            self.token_requests += 1
            if form.get("grant_type") != "client_credentials":
                return 400, {"error": "unsupported_grant_type"}
            if self.client_id is None or (form.get("client_id"), form.get("client_secret")) != (
                self.client_id, self.client_secret
            ):
                return 401, {"error": "invalid_client"}
            token = secrets.token_urlsafe(24)
            self._tokens[token] = time.monotonic() + self.token_ttl_s
            return 200, {"access_token": token, "expires_in": int(self.token_ttl_s), "token_type": "Bearer"}

    def states(self, query: dict[str, str], authorization: str | None):
        """-> (status, headers, body bytes, delay_s)."""
        with self._lock:
            fault = self.faults.popleft() if self.faults else None
            if authorization:
                token = authorization.removeprefix("Bearer ").strip()
                if fault == "expired_token":
                    self._tokens.pop(token, None)
                left = self._tokens.get(token, 0) - time.monotonic()
                if left < 0:
                    self.requests.append("expired_token" if fault == "expired_token" else "unauthorized")
                    return 401, {}, b'{"error":"invalid_token"}', 0.0
                self.token_left_s.append(left)
                if fault == "expired_token":
                    fault = None
            if fault == "expired_token":  # anonymous client: nothing to expire
                fault = None
            bbox = None
            if all(k in query for k in ("lamin", "lomin", "lamax", "lomax")):
                bbox = tuple(float(query[k]) for k in ("lamin", "lomin", "lamax", "lomax"))
            headers = {REMAINING_HEADER: str(self.credits)}
            if fault == "rate_limit":
                self.requests.append(fault)
                return 429, {REMAINING_HEADER: "0", RETRY_AFTER_HEADER: str(self.retry_after_s)}, b"Too many requests", 0.0
            if fault == "server_error":
                self.requests.append(fault)
                return 500, {}, b"Internal Server Error", 0.0
            last_time = self.responses[-1]["time"] if self.responses else int(time.time())
            if fault == "null_states":
                self.requests.append(fault)
                t = self.responses[self.cursor]["time"] if self.cursor < len(self.responses) else last_time + 10
                return 200, headers, json.dumps({"time": t, "states": None}).encode(), 0.0
            if self.cursor < len(self.responses):
                response = self.responses[self.cursor]
            else:
                response = {"time": last_time + 10, "states": None}
            response = _filtered(response, bbox, short=fault == "short_rows",
                                 extended=query.get("extended") == "1")
            body = json.dumps(response).encode()
            if fault == "truncated":
                self.requests.append(fault)
                return 200, headers, body[: len(body) // 2], 0.0
            if fault == "slow":
                self.requests.append(fault)
                return 200, headers, body, self.slow_s  # the client times out first: not served
            self.requests.append(fault or "ok")
            self.credits = max(0, self.credits - credit_cost(bbox))
            headers[REMAINING_HEADER] = str(self.credits)
            if self.cursor < len(self.responses):
                self.cursor += 1
                self.served.append(response)
            return 200, headers, body, 0.0


def _filtered(response: dict, bbox, short: bool, extended: bool) -> dict:
    rows = response.get("states")
    if rows is not None and bbox is not None:
        lamin, lomin, lamax, lomax = bbox
        lat, lon = FIELD_INDEX["latitude"], FIELD_INDEX["longitude"]
        rows = [r for r in rows if r[lat] is not None and r[lon] is not None
                and lamin <= r[lat] <= lamax and lomin <= r[lon] <= lomax]
    if rows is not None and (short or not extended):
        rows = [r[:MIN_STATE_FIELDS] for r in rows]  # without `category`, as OpenSky sends them
    return {"time": response["time"], "states": rows if rows else None}


def _handler(fake: FakeOpenSky):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # requests are logged at debug level only
            log.debug("fake-opensky: " + fmt, *args)

        def _send(self, status: int, body: bytes, headers: dict | None = None, delay: float = 0.0) -> None:
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (slow fault): expected

        def do_POST(self):
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            if url.path == TOKEN_PATH:
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                status, body = fake.issue_token(form)
                self._send(status, json.dumps(body).encode())
            elif url.path.startswith("/_fault/"):
                count = int(parse_qs(url.query).get("count", ["1"])[0])
                try:
                    fake.inject(url.path.removeprefix("/_fault/"), count)
                except ValueError as exc:
                    self._send(400, json.dumps({"error": str(exc)}).encode())
                    return
                self._send(200, json.dumps({"queued": list(fake.faults)}).encode())
            else:
                self._send(404, b'{"error":"not found"}')

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path != STATES_PATH:
                self._send(404, b'{"error":"not found"}')
                return
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            status, headers, body, delay = fake.states(query, self.headers.get("Authorization"))
            self._send(status, body, headers, delay)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lakehouse.local.fake_opensky", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replay", nargs="+", required=True, metavar="FILE", help="replay file(s) to serve")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = a free one)")
    parser.add_argument("--client-id", help="accepted client id (no id = token endpoint refuses all)")
    parser.add_argument("--client-secret", help="accepted client secret")
    parser.add_argument("--fault", action="append", default=[], choices=FAULTS, help="queue a fault (repeatable)")
    parser.add_argument("--retry-after", type=int, default=2, help="seconds in the 429 retry header")
    parser.add_argument("--slow-s", type=float, default=3.0, help="delay of the slow fault")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fake = FakeOpenSky.from_replay(args.replay, client_id=args.client_id, client_secret=args.client_secret,
                                   port=args.port, retry_after_s=args.retry_after, slow_s=args.slow_s)
    for fault in args.fault:
        fake.inject(fault)
    fake.start()
    print(f"fake OpenSky on {fake.base_url}: {len(fake.responses)} responses", flush=True)
    print(f"  OPENSKY_LAKEHOUSE_OPENSKY__API_URL={fake.api_url}", flush=True)
    print(f"  OPENSKY_LAKEHOUSE_OPENSKY__TOKEN_URL={fake.token_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
