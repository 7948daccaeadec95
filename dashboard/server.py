"""How ``opensky-lakehouse dashboard`` (``lakehouse.app.commands.dashboard``) serves the Streamlit
app: its ``streamlit run`` command line, and the environment that hands it every resolved setting
as OPENSKY_LAKEHOUSE_* variables.
"""

from __future__ import annotations

import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
PROJECT = APP.parent.parent



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
    return settings.child_env(PROJECT)


