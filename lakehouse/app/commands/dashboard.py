"""Serve the Streamlit dashboard over the gold tables: `opensky-lakehouse dashboard`.

Runs ``streamlit run dashboard/app.py`` on 127.0.0.1:<dashboard.port> (headless), handing every
resolved setting to the app as OPENSKY_LAKEHOUSE_* environment variables, so the page sees the
same configuration as this command (profile, --config file and overrides included). Stops
with Ctrl-C or SIGTERM, which reach the Streamlit server.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from dashboard.server import command, environment


def configure(parser) -> None:
    parser.add_argument("--port", type=int, help="listen on this port (default: dashboard.port)")
    parser.add_argument("--address", default="127.0.0.1", help="listen address (default: 127.0.0.1)")


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
