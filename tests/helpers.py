"""Small helpers shared by the integration tests: produce, run the CLI, read tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cli_env(settings, **extra: str) -> dict[str, str]:
    """The environment that hands ``settings`` to a CLI subprocess (no .env, no profile)."""
    return {**settings.child_env(REPO), **extra}


def run_cli(settings, *args: str, timeout: float = 300, check: bool = True, **env: str):
    """Run ``python -m lakehouse ARGS`` with ``settings``; return the CompletedProcess."""
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", *args],
        cwd=REPO,
        env=cli_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"opensky-lakehouse {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"
        )
    return result


def produce(settings, records, topic: str | None = None) -> int:
    """Send ``(key, value)`` pairs (text, UTF-8 encoded, or bytes as they are) to Kafka with
    kafka-python; return how many."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=5)
    n = 0
    try:
        for key, value in records:
            producer.send(
                topic or settings.kafka.topic,
                key=None if key is None else key if isinstance(key, bytes) else key.encode(),
                value=value if isinstance(value, bytes) else value.encode(),
            )
            n += 1
        producer.flush(timeout=60)
    finally:
        producer.close()
    return n


def delta_rows(settings, name: str) -> int:
    """Row count of a table read with delta-rs (0 when it does not exist yet)."""
    from lakehouse.delta_rs import table_info

    info = table_info(settings, name)
    return info["rows"] if info["exists"] else 0


def delta_version(settings, name: str) -> int:
    from lakehouse.delta_rs import table_info

    info = table_info(settings, name)
    return info["version"] if info["exists"] else -1


def replay_records(responses) -> list[tuple[str, str]]:
    """Recorded responses (``ingestion.replay``) as the ``(key, value)`` records the producer sends."""
    import json

    from ingestion.states import response_to_records

    return [(rec["icao24"], json.dumps(rec)) for r in responses for rec in response_to_records(r, "replay", 0)]
