"""Ingestion without Kafka: record mapping, replay files, ICAO countries, credits, simulator, samples;
the OpenSky client against the fake server over real HTTP (token renewal, 429 resume time)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
from pathlib import Path

import pytest

from ingestion.feeds import shift_response
from ingestion.icao import country_of
from ingestion.opensky import OpenSkyClient, TokenManager, credit_cost, plan_interval
from ingestion.poller import Poller
from ingestion.replay import ReplayStats, ReplayWriter, count_states, read_replay
from ingestion.simulator import ANOMALY_KINDS, Simulator, _bearing, _distance, write_labels
from ingestion.states import MalformedResponse, response_to_records
from lakehouse.local.fake_opensky import FakeOpenSky
from lakehouse.records import RECORD_FIELDS, STATE_FIELDS

FIXTURE = Path(__file__).parent / "fixtures" / "quickstart_excerpt.jsonl.gz"
ROW = ["3c6444", "DLH9LF  ", "Germany", 1700000000, 1700000001, 8.5, 50.03, 1234.5, False, 150.2, 270.0, -5.2,
       None, 1300.0, "1000", False, 0, 4]


def test_state_fields_follow_the_opensky_order():
    assert len(STATE_FIELDS) == 18
    assert (STATE_FIELDS[7], STATE_FIELDS[13], STATE_FIELDS[17]) == ("baro_altitude", "geo_altitude", "category")


def test_response_to_records_names_fields_and_passes_values_unchanged():
    [record] = response_to_records({"time": 1700000005, "states": [ROW]}, "replay", 1700000006123)
    assert list(record) == list(RECORD_FIELDS)
    assert [record[f] for f in STATE_FIELDS] == ROW  # callsign padding kept, units untouched
    assert (record["schema_version"], record["snapshot_time"], record["source"], record["produced_at"]) == (
        1, 1700000005, "replay", 1700000006123)


def test_seventeen_field_rows_and_null_states_are_normal():
    [record] = response_to_records({"time": 1, "states": [ROW[:17]]}, "opensky", 0)
    assert record["category"] is None and record["geo_altitude"] == 1300.0
    assert response_to_records({"time": 1, "states": None}, "opensky", 0) == []


@pytest.mark.parametrize("body", [
    [], {"states": []}, {"time": "x", "states": []}, {"time": 1, "states": {}}, {"time": 1, "states": [ROW[:16]]},
    {"time": 1, "states": ["3c6444"]},
])
def test_malformed_responses_are_rejected_whole(body):
    with pytest.raises(MalformedResponse):
        response_to_records(body, "opensky", 0)


def test_country_from_icao_allocation_blocks():
    assert country_of("3c6444") == "Germany"
    assert country_of("a0b1c2") == "United States"
    assert country_of("39cea2") == "France"
    assert country_of("4d2001") == "Malta"
    assert country_of("4d2400") is None  # just past Malta's 1,024 addresses
    assert country_of("zzzzzz") is None and country_of("3c64") is None


def test_credit_cost_by_area():
    assert credit_cost(None) == 4
    assert credit_cost((45, 5, 50, 10)) == 1  # 25 sq deg
    assert credit_cost((45, 0, 55, 10)) == 2  # 100
    assert credit_cost((40, 0, 60, 20)) == 3  # 400
    assert credit_cost((30, -10, 60, 30)) == 4  # 1200


def test_plan_interval_fits_the_budget_and_never_beats_the_resolution():
    anonymous_global = plan_interval(None, authenticated=False)
    assert anonymous_global.interval_s == pytest.approx(864.0)  # 400 credits / 4 per call
    assert "100 calls/day" in anonymous_global.reason
    small_box = plan_interval((45, 5, 50, 10), authenticated=True, daily_credits=100_000)
    assert small_box.interval_s == 5.0 and "only every 5 s" in small_box.reason
    assert plan_interval((45, 5, 50, 10), authenticated=False, daily_credits=100_000).interval_s == 10.0
    fixed = plan_interval(None, authenticated=True, fixed_interval_s=1)
    assert fixed.interval_s == 5.0 and "raised to 5 s" in fixed.reason and "expect 429s" in fixed.reason


def test_replay_reads_gzip_and_plain_and_skips_malformed_lines(tmp_path, caplog):
    plain = tmp_path / "capture.jsonl"
    plain.write_text(
        json.dumps({"time": 10, "states": [ROW]}) + "\n"
        + '{"time": 20, "states": [["abc"\n'  # cut off mid-line
        + "\n"
        + json.dumps({"time": 30, "states": None}) + "\n"
    )
    zipped = tmp_path / "capture.bin"  # gzip is recognised by content, not by name
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    stats = ReplayStats()
    responses = list(read_replay([plain, zipped], stats))
    assert [r["time"] for r in responses] == [10, 30, 10, 30]
    assert (stats.responses, stats.states, stats.malformed) == (4, 2, 2)
    assert stats.malformed_where == [f"{plain}:2", f"{zipped}:2"]
    assert "malformed response skipped" in caplog.text


def test_replay_writer_round_trip(tmp_path):
    path = tmp_path / "rec.jsonl.gz"
    with ReplayWriter(path) as writer:
        writer.write({"time": 1, "states": [ROW]})
    with ReplayWriter(path) as writer:  # appending adds a gzip member
        writer.write({"time": 2, "states": None})
    assert list(read_replay(path)) == [{"time": 1, "states": [ROW]}, {"time": 2, "states": None}]


def test_fixture_is_real_quickstart_traffic():
    responses = list(read_replay(FIXTURE))
    assert len(responses) == 180 and count_states(FIXTURE) == 5905
    times = [r["time"] for r in responses]
    assert times == list(range(1633615210, 1633617001, 10))
    for response in responses:
        for row in response["states"] or ():
            assert len(row) == 18
            assert response["time"] - 60 <= row[3] <= response["time"]  # latest point, <= 60 s old


def test_shift_response_moves_every_time_field():
    shifted = shift_response({"time": 100, "states": [ROW]}, 1000)
    assert shifted["time"] == 1100
    assert shifted["states"][0][3:5] == [ROW[3] + 1000, ROW[4] + 1000]
    assert shifted["states"][0][5:] == ROW[5:]


def test_simulator_is_deterministic_for_a_seed():
    a, b = Simulator(seed=3, aircraft=40, anomaly_rate=0.2), Simulator(seed=3, aircraft=40, anomaly_rate=0.2)
    assert list(a.snapshots(30)) == list(b.snapshots(30))
    assert a.labels == b.labels and a.labels
    assert list(Simulator(seed=4, aircraft=40).snapshots(1)) != list(Simulator(seed=3, aircraft=40).snapshots(1))


def test_simulator_kinematics_are_consistent():
    """Distance flown between snapshots matches the reported speed; altitude change matches vertical rate."""
    from ingestion.simulator import _distance

    sim = Simulator(seed=7, aircraft=300, anomaly_rate=0.0)
    first, second = list(sim.snapshots(2))
    assert len({row[0] for row in first["states"]}) == 300
    assert all(country_of(row[0]) == row[2] for row in first["states"])
    airborne = [(r1, r2) for r1, r2 in zip(first["states"], second["states"], strict=True) if not r1[8] and not r2[8]]
    assert len(airborne) > 200
    for r1, r2 in airborne:
        flown = float(_distance(r1[6], r1[5], r2[6], r2[5]))
        assert flown == pytest.approx(r1[9] * 10, rel=0.02, abs=25)
        assert r2[7] - r1[7] == pytest.approx(r1[11] * 10, abs=1.0)
        assert 0 <= r1[7] <= 13100 and 60 <= r1[9] <= 270
    assert any(row[8] for row in first["states"])  # some aircraft on the ground


def test_simulator_injects_every_anomaly_kind_and_labels_it(tmp_path):
    sim = Simulator(seed=11, aircraft=500, anomaly_rate=0.1, kinds=ANOMALY_KINDS)
    responses = {r["time"]: {row[0]: row for row in r["states"]} for r in sim.snapshots(60)}
    kinds = {label.kind for label in sim.labels}
    assert kinds == set(ANOMALY_KINDS)
    for label in sim.labels:
        row = responses[label.time_position][label.icao24]
        before = responses.get(label.time_position - 10, responses[label.time_position])[label.icao24]
        if label.kind == "emergency_squawk":
            assert row[14] in ("7500", "7600", "7700")
        elif label.kind == "rapid_descent":
            assert row[11] <= -35
        elif label.kind == "speed_spike":
            assert row[9] >= 450
        elif label.kind == "altitude_drop":
            assert 50 <= row[7] <= 250 and row[9] > 120
        elif label.kind == "slow_cruise":
            assert row[7] >= 6000 and 60 <= row[9] <= 90 and not row[8]
        elif label.kind == "altitude_step":  # the level left by hundreds of metres, rate flat
            assert abs(row[7] - before[7]) >= 150 and row[11] == 0
        elif label.kind == "geo_divergence":  # GNSS offsets are N(0, 40 m) otherwise
            assert abs(row[13] - row[7]) >= 800 - 200
        elif label.kind == "speed_mismatch":  # slower than the distance it flew
            assert row[9] <= 0.7 * _distance(before[6], before[5], row[6], row[5]) / 10
        elif label.kind == "impossible_turn":  # a track far off the course flown
            course = _bearing(before[6], before[5], row[6], row[5])
            assert abs((row[10] - course + 180) % 360 - 180) >= 60
    normal = [row for by_icao in responses.values() for row in by_icao.values()]
    labelled = {(label.icao24, label.time_position) for label in sim.labels}
    assert not any(row[14] in ("7500", "7600", "7700") for row in normal if (row[0], row[3]) not in labelled)
    write_labels(sim.labels, tmp_path / "labels.csv")
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert lines[0] == "icao24,time_position,kind" and len(lines) == len(sim.labels) + 1


def test_samples_conversion_to_si_units_and_snapshots():
    import pandas as pd

    from ingestion.samples import to_responses

    points = pd.DataFrame({
        "icao24": ["3c6444", "3c6444", "3c6444", "39cea2"],
        "timestamp": [1_000_000_001_000, 1_000_000_012_000, 1_000_000_200_000, 1_000_000_005_000],
        "latitude": [50.0, 50.1, 50.2, 48.7], "longitude": [8.0, 8.1, 8.2, 2.3],
        "altitude": [10000.0, None, 9000.0, None], "groundspeed": [400.0, 410.0, 420.0, 10.0],
        "track": [90.0, 91.0, 92.0, 180.0], "vertical_rate": [-1000.0, 0.0, 0.0, None],
        "callsign": ["DLH9LF", "DLH9LF", "DLH9LF", "TVF93VT"], "onground": [False, False, False, True],
        "squawk": ["1000", "1000", "1000", None],
    })
    responses = to_responses(points)
    assert [r["time"] for r in responses][:3] == [1_000_000_010, 1_000_000_020, 1_000_000_030]
    first = {row[0]: row for row in responses[0]["states"]}
    dlh = first["3c6444"]
    assert dlh[1] == "DLH9LF  " and dlh[2] == "Germany" and dlh[3] == 1_000_000_001
    assert dlh[7] == pytest.approx(3048.0) and dlh[9] == pytest.approx(205.78, abs=0.01)
    assert dlh[11] == pytest.approx(-5.08)
    second = {row[0]: row for row in responses[1]["states"]}
    assert second["3c6444"][7] == pytest.approx(3048.0)  # altitude carried from the point 11 s before
    assert first["39cea2"][8] is True and first["39cea2"][2] == "France"
    by_time = {r["time"]: {row[0] for row in r["states"] or ()} for r in responses}
    assert "3c6444" in by_time[1_000_000_070] and "3c6444" not in by_time[1_000_000_080]  # > 60 s old
    assert by_time[1_000_000_200] == {"3c6444"}


def test_token_is_renewed_before_it_expires_so_no_call_gets_a_401():
    """Calls spanning more than the token's lifetime: the client renews the token ahead of expiry
    (``margin_s`` before), so the server never sees an expired one; between renewals it is cached."""
    import requests

    responses = list(read_replay(FIXTURE))[:8]
    with FakeOpenSky(responses, client_id="id-1", client_secret="secret-1", token_ttl_s=2) as fake:
        session = requests.Session()
        tokens = TokenManager(fake.token_url, "id-1", "secret-1", session, timeout_s=5, margin_s=1.0)
        client = OpenSkyClient(fake.api_url, tokens=tokens, session=session, timeout_s=5)
        started = time.monotonic()
        got = []
        for _ in range(7):
            got.append(client.states().response["time"])
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        history, token_requests, left = list(fake.requests), fake.token_requests, list(fake.token_left_s)
    assert elapsed > 1.5 * fake.token_ttl_s  # the first token would have expired on the way
    assert history == ["ok"] * 7  # no 401 (an "unauthorized" entry) ever answered
    assert got == [r["time"] for r in responses[:7]]
    assert 2 <= token_requests < 7 and tokens.fetches == token_requests
    # renewed a margin ahead: a token is never presented in its last second (refreshing only at
    # expiry would present one with about 0.5 s left)
    assert len(left) == 7 and min(left) > 0.75, left


def test_429_resume_time_is_logged_in_the_local_time_zone(base_settings, caplog):
    """TZ five and a half hours east of UTC (Asia/Kolkata's offset, as a POSIX rule so no tz
    database is needed): a 429 at 22:13:20 UTC with Retry-After 120 s resumes at 03:45:20 IST."""
    now = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    try:
        with FakeOpenSky(list(read_replay(FIXTURE))[:1], retry_after_s=120) as fake:
            fake.inject("rate_limit")
            sleeps = []
            poller = Poller(OpenSkyClient(fake.api_url, timeout_s=5), lambda r: (0, 0), base_settings.opensky,
                            clock=lambda: now + sum(sleeps), sleep=lambda s: sleeps.append(s) or False)
            with caplog.at_level(logging.WARNING, logger="ingestion.poller"):
                stats = poller.run(max_polls=1)
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()
    assert stats.rate_limited == 1 and stats.polls_ok == 1 and sleeps[0] == 120
    [line] = [r.getMessage() for r in caplog.records if "polling resumes at" in r.getMessage()]
    assert "polling resumes at 03:45:20 IST (local time)" in line, line


def test_a_looped_replay_catches_up_with_the_clock_and_never_passes_it():
    from ingestion.feeds import catch_up_offset

    first, last, now = 1_633_615_210, 1_633_617_000, 1_800_000_000.0
    for speedup in (None, 10.0, 2.0, 1.0, 0.5):
        offset = catch_up_offset(first, last, speedup, now)
        pace = speedup or float("inf")
        for t in range(first, last + 1, 10):  # sent at now + (t - first) / pace
            assert t + offset <= now + (t - first) / pace + 1, (speedup, t)
        if speedup is None or speedup > 1:
            assert abs(last + offset - (now + (last - first) / pace)) <= 1  # caught up at the end
        else:
            assert first + offset == int(now)  # real time or slower: starts now


def test_a_fast_simulation_starts_in_the_past_and_a_paced_item_waits_for_the_clock():
    from ingestion.feeds import Stop, _paced, simulation_start

    now = 1_800_000_000.0
    assert simulation_start(None, 10, 10.0, now) == 1_800_000_000  # unbounded: now, then the clock paces
    assert simulation_start(100, 10, None, now) == now - 990  # the 100th snapshot at now
    assert simulation_start(100, 10, 10.0, now) == now - 900  # 99 x 10 s x 0.9, on the grid
    assert simulation_start(100, 10, 1.0, now) == now

    class Recording(Stop):
        waits: list = []

        def wait(self, seconds):
            self.waits.append(seconds)
            return False

    stop = Recording()
    t = time.time()
    items = list(_paced([t - 30, t + 20], None, stop, lambda x: x, offset=0))
    assert items == [t - 30, t + 20]
    assert stop.waits[0] <= 0 and 19 < stop.waits[1] <= 20  # the second waited for the clock


def test_the_producer_default_compression_round_trips_through_kafka_pythons_c_paths(base_settings):
    """kafka-python falls back to a pure-Python CRC-32C of every record batch without the
    ``crc32c`` package (~10 us a record more, docs/scaling.md), and cannot send with zstd, the
    default compression, without ``zstandard``: both are dependencies. A batch built the way the
    producer builds it (default compression) is smaller than its JSON and reads back intact."""
    import kafka.codec
    import kafka.record.util
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

    from ingestion.producer import encode_value

    assert kafka.record.util.crc32c_c is not None, "pip install crc32c: kafka-python's C CRC-32C"
    codec = base_settings.producer.compression
    assert codec == "zstd" and kafka.codec.has_zstd()
    records = response_to_records(list(read_replay(FIXTURE))[0], "opensky", 1_700_000_000_000)
    values = [encode_value(r) for r in records]
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=DefaultRecordBatch.CODEC_ZSTD,
                                        is_transactional=False, producer_id=1, producer_epoch=0,
                                        base_sequence=0, batch_size=1 << 20)
    for offset, value in enumerate(values):
        assert builder.append(offset, timestamp=None, key=None, value=value, headers=[]) is not None
    built = bytes(builder.build())
    batch = DefaultRecordBatch(built)
    assert batch.validate_crc()
    assert [r.value for r in batch] == values
    assert len(built) < sum(map(len, values)) / 4


def test_the_key_partitioner_picks_kafka_pythons_partition_and_forgets_it_when_partitions_change():
    """Remembered per key, but always the default partitioner's choice (murmur2 of the key, as
    the Java client), recomputed once the topic has more partitions; keyless records spread."""
    from kafka.partitioner import DefaultPartitioner

    from ingestion.producer import key_partitioner

    class Cluster:  # the two look-ups a partitioner makes of kafka-python's ClusterMetadata
        def __init__(self, count):
            self.count = count

        def topics(self):
            return {"t"}

        def partitions_for_topic(self, topic):
            return set(range(self.count)) if topic == "t" else None

        def available_partitions_for_topic(self, topic):
            return self.partitions_for_topic(topic)

    chooser, default = key_partitioner(max_keys=50), DefaultPartitioner()
    keys = [f"{i:06x}".encode() for i in range(200)]
    for count in (3, 3, 7, 3):
        cluster = Cluster(count)
        assert [chooser.partition("t", None, k, None, b"v", cluster) for k in keys] == [
            default.partition("t", None, k, None, b"v", cluster) for k in keys]
    assert len({chooser.partition("t", None, None, None, b"v", Cluster(7)) for _ in range(200)}) > 1
    with pytest.raises(ValueError, match="not found"):
        chooser.partition("other", None, b"abc123", None, b"v", Cluster(3))
