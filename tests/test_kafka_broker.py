"""The embedded broker: status reports partitions and offsets; start is idempotent."""

from __future__ import annotations

import json

import pytest

from tests.helpers import produce, run_cli

pytestmark = pytest.mark.integration


def test_status_shows_partitions_and_end_offsets(lake):
    produce(lake, [("k", "v")] * 7)
    out = json.loads(run_cli(lake, "kafka", "status", "--json").stdout)
    assert out["serving"] and out["running"]
    assert out["partitions"] == lake.kafka.partitions
    assert out["records"] == 7


def test_start_again_is_a_no_op_and_creates_a_missing_topic(lake):
    settings = lake.replace(kafka={"topic": lake.kafka.topic + ".new", "partitions": 2})
    out = run_cli(settings, "kafka", "start")
    assert "2 partitions" in out.stdout


def test_broker_listens_on_loopback_only(kafka_settings):
    from lakehouse.local.kafka_broker import broker_paths

    config = broker_paths(kafka_settings).config.read_text()
    listeners = [line for line in config.splitlines() if line.startswith(("listeners=", "advertised.listeners="))]
    assert listeners and all("0.0.0.0" not in line for line in listeners)
    assert all("127.0.0.1" in line for line in listeners)


def test_status_when_nothing_runs(base_settings, tmp_path):
    from lakehouse.net import free_port

    settings = base_settings.replace(kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}",
                                            "data_dir": str(tmp_path / "k")})
    out = run_cli(settings, "kafka", "status", check=False)
    assert out.returncode == 3
    assert "not running" in out.stdout


def test_cluster_id_never_starts_with_a_dash(monkeypatch):
    """The storage tool reads ``-t -...`` as an option: an id starting with ``-`` made one broker
    start in 64 fail. Bytes starting 0xF8 encode to a leading ``-``: a new id is drawn instead."""
    import uuid

    from lakehouse.local import kafka_broker

    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(kafka_broker.uuid, "uuid4", lambda: next(draws))
    cluster_id = kafka_broker.new_cluster_id()
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"
    assert len(cluster_id) == 22


def test_broker_runs_with_a_small_log_cleaner_buffer(kafka_settings):
    """The log cleaner's offset map is allocated on the heap at start (128 MiB by Kafka's default,
    most of the broker's live heap); the running broker reports the 16 MiB it is given instead."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.kafka.bootstrap_servers)
    key = "log.cleaner.dedupe.buffer.size"
    try:
        response = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1", configs={key: None})],
                                          config_filter="all")
    finally:
        admin.close()
    config = response["broker"]["1"][key]
    assert (config["value"], config["config_source"]) == (str(16 * 2**20), "STATIC_BROKER_CONFIG")
