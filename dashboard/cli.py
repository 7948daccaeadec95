"""Serve the Streamlit dashboard over the gold tables: `opensky-lakehouse dashboard`.

Runs ``streamlit run dashboard/app.py`` on 127.0.0.1:<dashboard.port> (headless), handing every
resolved setting to the app as OPENSKY_LAKEHOUSE_* environment variables, so the page sees the
same configuration as this command (profile, --config file and overrides included). Stops
with Ctrl-C or SIGTERM, which reach the Streamlit server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
PROJECT = APP.parent.parent


def configure(parser) -> None:
    parser.add_argument("--port", type=int, help="listen on this port (default: dashboard.port)")
    parser.add_argument("--address", default="127.0.0.1", help="listen address (default: 127.0.0.1)")


def command(settings, port: int | None = None, address: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line serving the app."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", address,
        "--server.port", str(port or settings.dashboard.port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]


def environment(settings) -> dict[str, str]:
    """This process's environment, the settings as variables, and this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSKY_LAKEHOUSE_")}
    env.update(settings.to_env())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH", "")) if p)
    return env


def run(args, settings) -> int:
    port = args.port or settings.dashboard.port
    print(f"dashboard: http://{args.address}:{port} (lakehouse {settings.storage.root}); Ctrl-C stops",
          file=sys.stderr, flush=True)
    server = subprocess.Popen(command(settings, port, args.address), env=environment(settings))

    def stop(signum, frame):  # forward SIGTERM so the server does not outlive this command
        server.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        try:
            return server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            return server.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
