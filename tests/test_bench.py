"""The benchmark harness: its arithmetic, its freshness accounting, and ``bench --quick`` end to end.

The end-to-end test checks that the suite runs and writes well-formed results (the harness),
not the numbers: those depend on the machine.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest

from bench.figures import figure, ratio, weighted_percentile
from bench.freshness import LiveFlightsWatcher, ProducerLog, Snapshot, window_figures
from bench.report import README_END, README_START, render, update_readme


def test_figure_is_median_min_max_of_the_runs_that_produced_a_value():
    assert figure([3.0, 1.0, 2.0, None]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": [3.0, 1.0, 2.0]}
    assert figure([None]) is None
    assert ratio([10.0, 30.0, None], [5.0, 10.0, 1.0])["runs"] == [2.0, 3.0]


def test_weighted_percentile_counts_each_value_as_often_as_its_weight():
    values, weights = [1.0, 10.0, 100.0], [90, 9, 1]
    assert weighted_percentile(values, weights, 0.5) == 1.0
    assert weighted_percentile(values, weights, 0.95) == 10.0
    assert weighted_percentile(values, weights, 1.0) == 100.0
    assert weighted_percentile([], [], 0.5) is None


def _live(rows):
    import pyarrow as pa

    return pa.table({
        "icao24": [r[0] for r in rows],
        "event_time": pa.array([datetime.fromtimestamp(r[1], timezone.utc) for r in rows],
                               pa.timestamp("us", tz="UTC")),
    })


def test_watcher_makes_every_superseded_state_visible_with_its_successor():
    plog = ProducerLog()
    for t in (100, 110, 120, 130):
        plog.snapshots[t] = Snapshot(time=t, produced_at_ms=t * 1000, acked_at_ms=t * 1000 + 50, states=2)
    times = plog.times()
    w = LiveFlightsWatcher("unused", {})
    w._account(_live([("aaaaaa", 100), ("bbbbbb", 100)]), 105_000, times, plog)  # the baseline
    assert w.contributions == []
    # aaaaaa jumps two snapshots (110 was superseded inside one gold batch), bbbbbb one
    w._account(_live([("aaaaaa", 120), ("bbbbbb", 110)]), 125_000, times, plog)
    got = sorted((c.produced_at_ms, c.commit_ms, c.states) for c in w.contributions)
    assert got == [(110_000, 125_000, 1), (110_000, 125_000, 1), (120_000, 125_000, 1)]
    # nothing moved: nothing new is visible
    w._account(_live([("aaaaaa", 120), ("bbbbbb", 110)]), 126_000, times, plog)
    assert len(w.contributions) == 3
    w._account(_live([("aaaaaa", 130), ("bbbbbb", 130)]), 140_000, times, plog)
    assert [plog.snapshots[t].visible for t in times] == [0, 2, 2, 2]

    stats = window_figures(w.contributions, plog, 110_000, 131_000, end_ms=200_000)
    assert stats["states"] == 6 and stats["unseen_states"] == 0
    # delays 15, 15, 5 then 10, 20, 10 s: lower median 10, max 20
    assert stats["p50_s"] == 10.0 and stats["max_s"] == 20.0


def test_states_never_visible_count_as_unseen_with_their_delay_so_far():
    plog = ProducerLog()
    plog.snapshots[10] = Snapshot(time=10, produced_at_ms=10_000, acked_at_ms=10_100, states=3, visible=1)
    stats = window_figures([], plog, 0, 20_000, end_ms=70_000)
    assert stats["unseen_states"] == 2
    assert stats["max_s"] == 60.0


def _results(**sections):
    return {
        "quick": True, "started_at": "2026-01-01T00:00:00+00:00", "duration_s": 60.0,
        "machine": {"cpus": 2, "load_start": [1.0, 1.0, 1.0], "load_end": [1.0, 1.0, 1.0], "spark_master": "local[2]",
                    "shuffle_partitions": 2, "commit": "abc1234"},
        "sections": sections,
    }


def test_readme_section_is_replaced_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n\nIntro.\n")
    results = _results(scoring={"status": "pending", "reason": "ml.scoring is not on this branch yet"})
    assert update_readme(readme, results, "bench/results/x.json")
    first = readme.read_text()
    assert first.count("## Performance") == 1 and README_START in first and README_END in first
    assert "**Scoring**: pending: ml.scoring is not on this branch yet" in first
    assert not update_readme(readme, results, "bench/results/x.json")  # same result: unchanged
    assert "Throughput**: not run" in render(results)


@pytest.mark.integration
def test_bench_quick_runs_every_section_and_writes_well_formed_results(base_settings, tmp_path):
    from tests.helpers import run_cli

    out, work = tmp_path / "results", tmp_path / "work"
    result = run_cli(base_settings, "bench", "--quick", "--out", str(out), "--work", str(work), timeout=900)
    files = sorted(out.iterdir())
    assert [f.suffix for f in files] == [".json", ".md"]
    data = json.loads(files[0].read_text())
    sections = data["sections"]
    assert set(sections) == {"throughput", "freshness", "scoring", "reads", "memory"}
    for name, section in sections.items():
        assert section["status"] in ("ok", "partial", "pending"), (name, section)

    tp = sections["throughput"]
    for step in ("produce", "reference", "bronze"):
        metric = tp["metrics"][step]
        assert metric["rows"]["median"] == tp["records"] == 2_000
        assert metric["records_per_s"]["min"] <= metric["records_per_s"]["median"] <= metric["records_per_s"]["max"]
    assert tp["metrics"]["reference"]["ratio_to_reference"]["median"] == 1.0
    if tp["status"] == "ok":
        assert {"silver", "gold", "end_to_end"} <= set(tp["metrics"])

    if sections["freshness"]["status"] == "ok":
        rates = sections["freshness"]["rates"]
        assert set(rates) == {"100", "1000", "100-recorded"}
        assert rates["100-recorded"]["tracks"] == "recorded" and rates["100"]["tracks"] == "simulated"
        for r in rates.values():
            assert sum(w["states"] for w in r["runs"]) > 0
            assert r["p50_s"]["median"] <= r["p95_s"]["median"] <= r["max_s"]["median"]
            # SIGTERM stopped `run all` between micro-batches: exit 0, no batch half written
            assert r["stopped"] == {"exit": 0, "accounting_holds": True}
        for peaks in sections["memory"]["rates"].values():
            assert peaks["kafka broker"]["peak_rss_mb"] > 50
            assert peaks["spark (run all: python + JVM)"]["peak_rss_mb"] > 100

    reads = sections["reads"]
    assert reads["before"]["version"] == reads["commits"] - 1
    # maintain's own commits move "latest" on; the back version timed is the same one.
    assert reads["after"]["version"] > reads["before"]["version"]
    assert reads["after"]["back_version"] == reads["before"]["back_version"] == reads["commits"] - 1 - 100
    for phase in ("before", "after"):
        assert reads[phase]["latest"]["rows"] == reads[phase]["100_back"]["rows"] == reads["rows_per_commit"]

    md = files[1].read_text()
    assert "| bronze |" in md and "**Dashboard reads**" in md
    assert md.split("\n", 2)[2] in result.stdout  # the table is also printed
    assert not work.exists()  # scratch space (and the bench broker's data) removed
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_mentions(p, str(work))]
    assert leftovers == []


def _cmdline_mentions(pid: str, text: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return text.encode() in fh.read()
    except OSError:
        return False


def test_fleet_reports_more_often_above_the_largest_simulated_fleet():
    from bench.freshness import MAX_AIRCRAFT, fleet_for

    assert fleet_for(1_000, 10.0) == (10_000, 10.0)
    aircraft, interval = fleet_for(10_000, 10.0)
    assert aircraft == MAX_AIRCRAFT and aircraft / interval == 10_000


def test_recorded_fleet_sends_real_tracks_at_the_rate_each_aircraft_without_gaps():
    """The recording's snapshots, copied up to the rate and looped: every address reports in
    consecutive snapshots only (the watcher's accounting), never twice in one, never again
    after a gap or in the next pass; positions as recorded, times those of the snapshot."""
    import collections
    import itertools

    from bench.freshness import RECORDING, recorded_fleet
    from ingestion.replay import read_replay

    recording = list(read_replay(RECORDING))
    aircraft, snapshots = recorded_fleet(recording, 1_000, 10.0, 1_700_000_000)
    sent = list(itertools.islice(snapshots, len(recording) + 20))  # over the end of the recording
    assert 9_000 < aircraft < 11_000
    per_snapshot = [len(s["states"]) for s in sent]  # real traffic: 25-42 states a recorded snapshot
    assert abs(sum(per_snapshot) / len(sent) - 10_000) < 500 and 7_000 < min(per_snapshot) <= max(per_snapshot) < 13_000
    assert [s["time"] for s in sent[:3]] == [1_700_000_000, 1_700_000_010, 1_700_000_020]
    reports = collections.defaultdict(list)
    for k, snapshot in enumerate(sent):
        addresses = [row[0] for row in snapshot["states"]]
        assert len(addresses) == len(set(addresses))
        assert all(row[3] == row[4] == snapshot["time"] for row in snapshot["states"])
        for address in addresses:
            reports[address].append(k)
    assert all(ks == list(range(ks[0], ks[-1] + 1)) for ks in reports.values())
    assert not any(ks[0] < len(recording) <= ks[-1] for ks in reports.values())  # a new pass: new aircraft
    recorded = {(row[5], row[6]) for row in recording[0]["states"] if row[3] is not None and row[5] is not None}
    assert {(row[5], row[6]) for row in sent[0]["states"]} == recorded


def test_memory_sampler_sums_the_whole_process_tree(tmp_path):
    import subprocess
    import sys
    import time

    from bench.memory import MemorySampler

    # a shell whose python child holds 150 MB: the tree's peak must include the child
    code = "x = bytearray(150 * 2**20); import time; time.sleep(30)"
    parent = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "{code}"; true'], start_new_session=True)
    try:
        with MemorySampler(interval_s=0.1) as sampler:
            sampler.track("tree", parent.pid)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and sampler.peaks().get("tree", {}).get("peak_rss_mb", 0) < 150:
                time.sleep(0.1)
        peak = sampler.peaks()["tree"]
    finally:
        os.killpg(parent.pid, 15)
        parent.wait(timeout=10)
    assert peak["peak_rss_mb"] >= 150 and peak["max_processes"] == 2
    assert 150 <= peak["peak_pss_mb"] <= peak["peak_rss_mb"]
    assert peak["largest"][0]["process"].startswith("python")


def test_address_spaces_are_told_apart_by_the_kernel():
    import subprocess
    import sys

    from bench.memory import same_address_space

    if same_address_space(os.getpid(), os.getpid()) is None:
        pytest.skip("kcmp(2) is not available here")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert same_address_space(os.getpid(), os.getpid()) is True
        assert same_address_space(os.getpid(), child.pid) is False
    finally:
        child.kill()
        child.wait(timeout=10)


def test_memory_sampler_counts_a_child_in_its_parents_address_space_once(monkeypatch):
    """A child sharing its parent's memory (the JVM's posix_spawn, before the command runs) shows
    the parent's RSS in /proc: it is left out of the tree's sum."""
    import subprocess
    import sys
    import time

    from bench import memory

    code = "x = bytearray(150 * 2**20); import time; time.sleep(30)"
    parent = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "{code}"; true'], start_new_session=True)
    monkeypatch.setattr(memory, "same_address_space", lambda a, b: b == parent.pid)
    try:
        time.sleep(2)  # the child holds its 150 MB
        with memory.MemorySampler(interval_s=0.1) as sampler:
            sampler.track("tree", parent.pid)
            time.sleep(0.5)
        peak = sampler.peaks()["tree"]
    finally:
        os.killpg(parent.pid, 15)
        parent.wait(timeout=10)
    assert peak["max_processes"] == 1 and peak["peak_rss_mb"] < 50
