"""Ingestion end to end: fake OpenSky over real HTTP, the real Kafka broker, the real CLI.

Every test counts what landed in Kafka by consuming its topic from the beginning: a fault
survived must leave exactly the states that were served, once each.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ingestion.opensky import OpenSkyClient, TokenManager
from ingestion.poller import Poller
from ingestion.producer import StateProducer
from ingestion.replay import read_replay
from ingestion.simulator import MODEL_KINDS, RULE_KINDS
from lakehouse.local.fake_opensky import FakeOpenSky
from tests.helpers import REPO, cli_env, run_cli

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "quickstart_excerpt.jsonl.gz"
CLIENT_ID, CLIENT_SECRET = "lakehouse-test", "s3cr3t-never-logged-7f3a"


def consume(settings, timeout_s: float = 60, partitions: dict | None = None) -> list[tuple[str | None, dict]]:
    """Every record of the settings' topic, as (key, value); ``partitions``, if given, gets each
    key's set of partitions."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    try:
        parts = [TopicPartition(settings.kafka.topic, p) for p in consumer.partitions_for_topic(settings.kafka.topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        records = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, "timed out consuming the topic"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((r.key.decode() if r.key else None, json.loads(r.value)) for r in batch)
                if partitions is not None:
                    for r in batch:
                        partitions.setdefault(r.key, set()).add(r.partition)
        return records
    finally:
        consumer.close()


def states_of(responses) -> Counter:
    return Counter((row[0], r["time"]) for r in responses for row in (r["states"] or ()))


def test_replay_puts_exactly_its_states_in_kafka(lake, tmp_path):
    recorded = tmp_path / "again.jsonl"
    result = run_cli(lake, "produce", "--source", "replay", "--path", str(FIXTURE), "--speedup", "max",
                     "--record", str(recorded))
    expected = states_of(read_replay(FIXTURE))
    partitions: dict = {}
    records = consume(lake, partitions=partitions)
    assert len(records) == sum(expected.values()) == 5905
    assert Counter((value["icao24"], value["snapshot_time"]) for _, value in records) == expected
    key, value = records[0]
    assert key == value["icao24"] and value["source"] == "replay" and value["schema_version"] == 1
    assert list(read_replay(recorded)) == list(read_replay(FIXTURE))  # --record writes the replay format
    assert "5905 states, 5905 sent, 0 failed" in result.stderr
    # Each aircraft on one partition, the one the Java client's partitioner picks (murmur2 of the
    # key): the producer remembers it per key instead of hashing every record.
    from kafka.partitioner.default import murmur2

    count = lake.kafka.partitions
    assert count > 1 and len({p for ps in partitions.values() for p in ps}) == count
    assert partitions == {
        key: {(murmur2(key) & 0x7FFFFFFF) % count} for key in partitions}


def test_replay_values_pass_through_unchanged(lake):
    run_cli(lake, "produce", "--source", "replay", "--path", str(FIXTURE), "--speedup", "max", "--max-records", "300")
    records = consume(lake)
    assert len(records) == 300  # --max-records is exact, even mid-snapshot
    rows = {(row[0], r["time"]): row for r in read_replay(FIXTURE) for row in (r["states"] or ())}
    from lakehouse.records import STATE_FIELDS

    for _, value in records:
        assert [value[f] for f in STATE_FIELDS] == rows[(value["icao24"], value["snapshot_time"])]


def test_simulator_lands_exactly_its_states_and_writes_labels(lake, tmp_path):
    labels = tmp_path / "labels.csv"
    result = run_cli(lake, "produce", "--source", "simulate", "--aircraft", "300", "--snapshots", "12",
                     "--seed", "5", "--anomaly-rate", "0.2", "--anomaly-kinds", "all", "--speedup", "max",
                     "--start-time", "1700000000", "--labels", str(labels))
    records = consume(lake)
    assert len(records) == 300 * 12
    assert len({(v["icao24"], v["time_position"]) for _, v in records}) == 3600
    assert {v["source"] for _, v in records} == {"simulator"}
    with open(labels) as fh:
        rows = list(csv.DictReader(fh))
    assert rows and set(rows[0]) == {"icao24", "time_position", "kind"}
    by_key = {(v["icao24"], v["time_position"]): v for _, v in records}
    for row in rows:
        assert (row["icao24"], int(row["time_position"])) in by_key
    assert {row["kind"] for row in rows} & set(RULE_KINDS) and {row["kind"] for row in rows} & set(MODEL_KINDS)
    assert "3600 sent, 0 failed" in result.stderr


def test_sigterm_flushes_and_loses_nothing(lake):
    """A paced replay stopped by SIGTERM reports what it sent, and exactly that is in Kafka."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lakehouse", "produce", "--source", "replay", "--path", str(FIXTURE),
         "--speedup", "100"],
        cwd=REPO, env=cli_env(lake), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(6)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "stopped by SIGTERM" in stderr
    final = [line for line in stderr.splitlines() if "produce: done" in line][-1]
    sent = int(final.split(" states, ")[1].split(" sent")[0])
    assert 0 < sent < 5905
    records = consume(lake)
    assert len(records) == sent
    assert len({(v["icao24"], v["snapshot_time"]) for _, v in records}) == sent


def test_every_fault_is_survived_without_loss_or_duplicate(lake, caplog):
    """The poller against the fake server, every fault once, into the real broker."""
    responses = list(read_replay(FIXTURE))[:14]
    clock = {"now": 1_700_000_000.0}
    sleeps = []

    def sleep(seconds):  # virtual time: minutes of polling in a second
        sleeps.append(seconds)
        clock["now"] += seconds
        return False

    with FakeOpenSky(responses, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, retry_after_s=120,
                     slow_s=1.5) as fake:
        for fault in ("expired_token", "rate_limit", "server_error", "slow", "truncated", "null_states",
                      "short_rows", "server_error", "server_error"):
            fake.inject(fault)
        import requests

        session = requests.Session()
        tokens = TokenManager(fake.token_url, CLIENT_ID, CLIENT_SECRET, session, timeout_s=5)
        client = OpenSkyClient(fake.api_url, tokens=tokens, session=session, timeout_s=0.5)
        producer = StateProducer(lake, "opensky")

        def sink(response):
            producer.send_response(response)
            delivery = producer.flush()
            return delivery.sent, delivery.failed

        cfg = lake.opensky
        poller = Poller(client, sink, cfg, clock=lambda: clock["now"], sleep=sleep, rng=random.Random(1))
        with caplog.at_level(logging.INFO):
            stats = poller.run(max_polls=16)
        producer.close()
        served = list(fake.served)
        history = list(fake.requests)

    assert [r["time"] for r in served] == [r["time"] for r in responses]  # nothing skipped, nothing repeated
    records = consume(lake)
    assert Counter((v["icao24"], v["snapshot_time"]) for _, v in records) == states_of(responses)
    assert len(records) == sum(len(r["states"] or ()) for r in responses)
    for fault in ("expired_token", "rate_limit", "server_error", "slow", "truncated", "null_states", "short_rows"):
        assert fault in history
    # the short_rows fault hit the first response served: 17-field rows give category null
    first = responses[0]["time"]
    assert all((v["category"] is None) == (v["snapshot_time"] == first) for _, v in records)
    assert stats.malformed == 1 and stats.rate_limited == 1 and stats.polls == 16
    assert tokens.fetches == 2  # one at start, one after the revoked token's 401
    assert 120 in sleeps  # waited exactly the Retry-After header
    assert "polling resumes at" in caplog.text and "(local time)" in caplog.text
    assert "malformed response skipped" in caplog.text
    assert CLIENT_SECRET not in caplog.text


def test_retries_are_bounded_then_the_poll_is_given_up(lake):
    with FakeOpenSky(list(read_replay(FIXTURE))[:3]) as fake:
        fake.inject("server_error", count=4)
        cfg = lake.replace(opensky={"max_retries": 2, "backoff_base_s": 1.0, "backoff_max_s": 3.0}).opensky
        sleeps = []
        got = []
        poller = Poller(OpenSkyClient(fake.api_url, timeout_s=5), lambda r: (got.append(r), (0, 0))[1], cfg,
                        clock=time.time, sleep=lambda s: sleeps.append(s) or False, rng=random.Random(2))
        stats = poller.run(max_polls=2)
    assert stats.polls_given_up == 1 and stats.retries == 3
    assert [r["time"] for r in got] == [list(read_replay(FIXTURE))[0]["time"]]
    backoffs = sleeps[:2] + sleeps[3:4]
    assert all(0 <= s <= 3.0 for s in backoffs)


def test_cli_against_fake_opensky_with_credentials_never_logs_the_secret(lake, tmp_path):
    responses = list(read_replay(FIXTURE))[:3]
    record = tmp_path / "live.jsonl.gz"
    with FakeOpenSky(responses, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, retry_after_s=1) as fake:
        fake.inject("expired_token")
        fake.inject("rate_limit")
        fake.inject("server_error")
        result = run_cli(
            lake, "-v", "produce", "--source", "opensky", "--max-polls", "2", "--bbox", "45,0,52,5", "--record",
            str(record), timeout=120,
            OPENSKY_CLIENT_ID=CLIENT_ID, OPENSKY_CLIENT_SECRET=CLIENT_SECRET,
            OPENSKY_LAKEHOUSE_OPENSKY__API_URL=fake.api_url, OPENSKY_LAKEHOUSE_OPENSKY__TOKEN_URL=fake.token_url,
            OPENSKY_LAKEHOUSE_OPENSKY__BACKOFF_BASE_S="0.05", OPENSKY_LAKEHOUSE_OPENSKY__POLL_INTERVAL_S="5",
        )
        served = list(fake.served)
    log_text = result.stdout + result.stderr
    assert CLIENT_SECRET not in log_text
    assert "authenticated mode" in log_text and "polling every 5.0 s" in log_text
    assert "polling resumes at" in log_text
    polls = [line for line in result.stderr.splitlines() if " poll " in line and "states," in line]
    assert len(polls) == 2 and all("credits left" in p and "next poll" in p for p in polls)
    assert [r["time"] for r in served] == [r["time"] for r in responses[:2]]
    records = consume(lake)
    assert Counter((v["icao24"], v["snapshot_time"]) for _, v in records) == states_of(served)
    assert {v["source"] for _, v in records} == {"opensky"}
    assert list(read_replay(record)) == served
    for _, v in records:
        assert 45 <= v["latitude"] <= 52 and 0 <= v["longitude"] <= 5


def test_wrong_credentials_stop_with_a_clear_error(lake):
    with FakeOpenSky([], client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as fake:
        result = run_cli(
            lake, "produce", "--source", "opensky", "--max-polls", "1", check=False, timeout=60,
            OPENSKY_CLIENT_ID=CLIENT_ID, OPENSKY_CLIENT_SECRET="wrong-secret-xyz",
            OPENSKY_LAKEHOUSE_OPENSKY__API_URL=fake.api_url, OPENSKY_LAKEHOUSE_OPENSKY__TOKEN_URL=fake.token_url,
        )
    assert result.returncode == 1
    assert "refused the client credentials" in result.stderr
    assert "wrong-secret-xyz" not in result.stderr + result.stdout


def test_loop_replays_forever_shifting_times_forward_never_ahead_of_the_clock(lake):
    """A looped replay shifts its times to look live but never sends a time from the future
    (silver would reject it against the Kafka append time): at max speed the first pass lies
    wholly in the past and ends now; the next continues 10 s later, at the clock's pace."""
    result = run_cli(lake, "produce", "--source", "replay", "--path", str(FIXTURE), "--speedup", "max", "--loop",
                     "--max-records", str(5905 + 20))
    done = time.time()
    records = consume(lake)
    assert len(records) == 5905 + 20
    times = sorted({v["snapshot_time"] for _, v in records})
    span = 1633617000 - 1633615210
    assert len(times) == 181  # a full pass (180 snapshots) and the start of the next
    assert times[-1] <= done  # nothing from the future
    assert abs(times[179] - done) < 60  # the first pass ends now: it looks live
    assert times[179] - times[0] == span
    assert times[180] - times[0] == span + 10  # the next pass continues 10 s after the previous one
    for _, v in records:
        assert v["snapshot_time"] - 60 <= v["time_position"] <= v["snapshot_time"]
    assert "pass 1 done" in result.stderr


def test_samples_fetch_reproduces_the_fixture(base_settings, tmp_path):
    """The command's own path: ``pip download --no-deps traffic==2.13`` (28 MB from PyPI) when the
    wheel is not cached yet, then the conversion; skipped only when PyPI cannot be reached."""
    from ingestion.samples import NETWORK_FAILURE

    out = tmp_path / "excerpt.jsonl.gz"
    result = run_cli(base_settings, "samples", "fetch", "quickstart", "--skip-minutes", "120", "--minutes", "30",
                     "--out", str(out), check=False, timeout=900)
    if result.returncode != 0 and NETWORK_FAILURE in result.stderr:
        pytest.skip("PyPI unreachable, the traffic wheel could not be downloaded: "
                    + result.stderr.strip().splitlines()[-1][:300])
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(read_replay(out)) == list(read_replay(FIXTURE))


def test_deliveries_the_broker_refuses_are_counted_reported_and_exit_1(lake):
    """Every batch refused for good (records larger than the topic allows): no crash, no hang,
    each record counted as failed, the reason reported, exit status 1, nothing in Kafka."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    settings = lake.replace(kafka={"topic": lake.kafka.topic + ".tiny"},
                            producer={"max_block_s": 2.0, "delivery_timeout_s": 5.0})
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(settings.kafka.topic, num_partitions=settings.kafka.partitions,
                                      replication_factor=1, topic_configs={"max.message.bytes": "64"})])
    finally:
        admin.close()
    started = time.monotonic()
    result = run_cli(settings, "produce", "--source", "replay", "--path", str(FIXTURE), "--speedup", "max",
                     "--max-records", "200", check=False, timeout=60)
    assert result.returncode == 1, result.stderr[-3000:]
    assert time.monotonic() - started < 30
    assert "Traceback" not in result.stderr
    assert "200 states, 0 sent, 200 failed, 0 pending" in result.stderr
    assert "200 record(s) failed delivery (last error: MessageSizeTooLargeError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("produce: 200 record(s) were not delivered")
    assert consume(settings) == []


def test_unreachable_broker_stops_produce_within_max_block_with_one_clear_line(base_settings):
    """Nothing listens at the bootstrap address: exit 1 after ``producer.max_block_s``, not the
    client's own 30 s, with one line naming the address and the cure; no traceback."""
    from lakehouse.net import free_port

    address = f"127.0.0.1:{free_port()}"
    settings = base_settings.replace(kafka={"bootstrap_servers": address},
                                     producer={"max_block_s": 1.0, "delivery_timeout_s": 5.0})
    started = time.monotonic()
    result = run_cli(settings, "produce", "--source", "replay", "--path", str(FIXTURE), "--speedup", "max",
                     check=False, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"produce: cannot reach Kafka at {address} within producer.max_block_s=1 s" in last
    assert "(KafkaTimeoutError)" in last and "opensky-lakehouse kafka start" in last


def test_records_survive_kafka_stop_and_start_on_the_same_data_dir(base_settings, tmp_path):
    """A broker of its own (free ports, data in tmp_path): what ``produce`` delivered is still
    there, at the same end offsets, after ``kafka stop`` and ``kafka start``."""
    from lakehouse.net import free_port

    settings = base_settings.replace(kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}",
                                            "data_dir": str(tmp_path / "kafka"), "topic": "restart.check"})
    try:
        run_cli(settings, "kafka", "start", timeout=300)
        run_cli(settings, "produce", "--source", "replay", "--path", str(FIXTURE), "--speedup", "max",
                "--max-records", "500")
        before = json.loads(run_cli(settings, "kafka", "status", "--json").stdout)
        assert before["records"] == 500
        assert run_cli(settings, "kafka", "stop").stdout.strip() == "kafka: stopped"
        assert run_cli(settings, "kafka", "status", check=False).returncode == 3  # really down
        run_cli(settings, "kafka", "start", timeout=300)
        after = json.loads(run_cli(settings, "kafka", "status", "--json").stdout)
        assert after["end_offsets"] == before["end_offsets"]
        records = consume(settings)
    finally:
        run_cli(settings, "kafka", "stop", check=False, timeout=120)
    first_500 = [(row[0], r["time"]) for r in read_replay(FIXTURE) for row in (r["states"] or ())][:500]
    assert Counter((v["icao24"], v["snapshot_time"]) for _, v in records) == Counter(first_500)


def test_a_record_that_is_not_json_is_counted_failed_and_the_rest_land(lake):
    """A NaN or infinity (Python's json.loads reads ``NaN`` in an API response) cannot be written as
    JSON: that record is counted as failed with the reason, never sent; the others land intact."""
    response = list(read_replay(FIXTURE))[0]
    rows = [list(row) for row in response["states"][:3]]
    rows[1][5] = float("nan")  # longitude
    producer = StateProducer(lake, "opensky")
    try:
        assert producer.send_response({**response, "states": rows}) == 3
        delivery = producer.flush()
    finally:
        producer.close()
    assert (delivery.sent, delivery.failed, delivery.pending) == (2, 1, 0)
    assert "not JSON compliant" in producer.last_error
    landed = consume(lake)
    assert sorted(v["icao24"] for _, v in landed) == sorted([rows[0][0], rows[2][0]])
    assert all(v == json.loads(json.dumps(v, allow_nan=False)) for _, v in landed)
