"""Session fixtures: one real Kafka broker and one SparkSession per test run.

``kafka_settings``: settings pointing at a real KRaft broker started with
``opensky-lakehouse kafka start`` on free ports in a temporary directory, always stopped.
``spark``: one local SparkSession with Delta and the Kafka connector (UI off, 2 partitions).
``lake``: per test, settings with a fresh lakehouse root and a fresh topic on that broker.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from lakehouse.net import free_port
from lakehouse.settings import load_settings
from tests.helpers import REPO, cli_env


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("session")
    return load_settings(profile="test", env={}, dotenv=None).replace(
        storage={"root": str(root / "lake")},
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "data_dir": str(root / "kafka")},
    )


@pytest.fixture(scope="session")
def kafka_settings(base_settings):
    """Settings whose broker is up; the broker is stopped when the session ends."""
    env = cli_env(base_settings)
    start = subprocess.run(
        [sys.executable, "-m", "lakehouse", "kafka", "start"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    try:
        if start.returncode != 0:
            pytest.fail(f"kafka start failed:\n{start.stdout}\n{start.stderr}")
        yield base_settings
    finally:
        subprocess.run(
            [sys.executable, "-m", "lakehouse", "kafka", "stop"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
        )


@pytest.fixture(scope="session")
def spark(base_settings):
    from lakehouse.spark import build_spark

    session = build_spark(base_settings, app_name="opensky-lakehouse-tests", register=False)
    yield session
    session.stop()


@pytest.fixture
def lake(kafka_settings, tmp_path):
    """Per-test settings: a fresh lakehouse root and a fresh topic on the session broker."""
    from lakehouse.kafka_admin import ensure_topic

    settings = kafka_settings.replace(
        storage={"root": str(tmp_path / "lake")},
        kafka={"topic": f"test.{uuid.uuid4().hex[:10]}"},
    )
    ensure_topic(settings, settings.kafka.topic, settings.kafka.partitions)
    return settings
