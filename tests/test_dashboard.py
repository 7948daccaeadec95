"""The dashboard against a known small gold lakehouse (tests/gold_fixture.py), read with delta-rs.

AppTest runs the real page script in-process: the history slider moves the whole page to an
older version and the KPIs follow; the feed and the map carry the right aircraft; the empty
state names what to run. The data layer is checked on its own for incremental refresh.
"""

from __future__ import annotations

import json
import os

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import charts, data
from lakehouse.settings import load_settings
from tests import gold_fixture as gold
from tests.helpers import REPO

APP = str(REPO / "dashboard" / "app.py")


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Test settings on a fresh root, handed to the app through the environment (as the CLI does)."""
    s = load_settings(profile="test", env={}, dotenv=None).replace(storage={"root": str(tmp_path / "lake")})
    for name in [k for k in os.environ if k.startswith("OPENSKY_LAKEHOUSE_")]:
        monkeypatch.delenv(name)
    for name, value in s.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    return s


@pytest.fixture
def lakehouse(settings):
    gold.build_gold(settings)
    return settings


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def kpis_of(at: AppTest) -> dict[str, tuple[str, str | None]]:
    return {m.label: (m.value, m.delta) for m in at.metric}


def expected_cards(version: int) -> dict[str, str]:
    e = gold.EXPECTED[version]
    return {
        "Live aircraft": str(e["live"]),
        "Airborne": str(e["airborne"]),
        "Anomalies": str(e["anomalies"]),
        "Avg altitude": "–" if e["altitude"] is None else f"{e['altitude']:,.0f} m",
        "Avg speed": "–" if e["speed"] is None else f"{e['speed']:,.0f} m/s",
    }


def deck_spec(at: AppTest) -> dict:
    return json.loads(at.get("deck_gl_json_chart")[0].proto.json)


def layer(spec: dict, layer_id: str) -> dict:
    return next(lyr for lyr in spec["layers"] if lyr["id"] == layer_id)


def test_live_page_shows_the_newest_version(lakehouse):
    at = run_app()
    cards = kpis_of(at)
    assert {k: v for k, (v, _) in cards.items() if k in expected_cards(gold.LATEST)} == expected_cards(gold.LATEST)
    assert cards["Live aircraft"][1] == "+0"  # same five aircraft as the version before
    assert at.select_slider(key="version").value == gold.LATEST
    assert not [i for i in at.info if "Viewing history" in i.value]
    assert any(f"version {gold.LATEST} ·" in c.value for c in at.caption)


def test_slider_moves_the_whole_page_to_an_older_version(lakehouse):
    at = run_app()
    at.select_slider(key="version").set_value(1).run()
    assert not at.exception
    cards = kpis_of(at)
    assert {k: cards[k][0] for k in expected_cards(1)} == expected_cards(1)
    assert cards["Live aircraft"][1] == "+3"  # against the empty version 0
    assert not cards["Avg altitude"][1]  # nothing airborne before: no delta
    assert any("Viewing history" in i.value and "version 1 of" in i.value for i in at.info)
    assert at.dataframe[0].value.empty  # no anomaly had been flagged by then

    at.button(key="forward").click().run()  # step: version 2
    cards = kpis_of(at)
    assert {k: cards[k][0] for k in expected_cards(2)} == expected_cards(2)
    assert cards["Live aircraft"][1] == "+2"
    assert cards["Anomalies"][1] == "+1"
    assert cards["Avg altitude"][1] == "+500 m"
    assert at.dataframe[0].value.icao24.tolist() == ["c0ffee"]

    at.button(key="go_live").click().run()
    assert at.select_slider(key="version").value == gold.LATEST
    assert {k: v for k, (v, _) in kpis_of(at).items() if k != "Freshness"} == expected_cards(gold.LATEST)


def test_feed_lists_flagged_aircraft_newest_first_with_rules_and_score(lakehouse):
    at = run_app()
    feed = at.dataframe[0].value
    assert feed.icao24.tolist() == ["c0ffee", "e48d4f"]  # same newest time: stable order by table
    c0ffee = feed.set_index("icao24").loc["c0ffee"]
    assert c0ffee.rules == "emergency_squawk, rapid_descent"
    assert c0ffee.states == gold.LATEST - 1  # flagged in versions 2..LATEST
    assert not c0ffee.ML
    e48d4f = feed.set_index("icao24").loc["e48d4f"]
    assert e48d4f.ML and e48d4f.score == pytest.approx(0.9)
    assert e48d4f["why (model)"] == gold.ML_REASON and c0ffee["why (model)"] == ""  # the model's reason
    assert c0ffee["time (UTC)"] == gold.event_time(gold.LATEST).strftime("%Y-%m-%d %H:%M:%S")


def test_map_has_every_live_aircraft_rotated_and_coloured_by_state(lakehouse):
    at = run_app()
    points = {p["icao24"]: p for p in layer(deck_spec(at), "aircraft")["data"]}
    assert set(points) == set(gold.VERSIONS[gold.LATEST])
    assert points["3c6444"]["state"] == "normal"
    assert points["c0ffee"]["state"] == "rule"
    assert points["e48d4f"]["state"] == "both"  # extreme_speed rule and the model
    assert points["c0ffee"]["color"][:3] == charts.STATES["rule"][1]
    _, _, track = gold.position("c0ffee", gold.LATEST)
    assert points["c0ffee"]["angle"] == pytest.approx((-track) % 360)
    assert points["c0ffee"]["reasons"] == "emergency_squawk, rapid_descent"
    assert points["e48d4f"]["reasons"] == f"extreme_speed, ML score 0.90 ({gold.ML_REASON})"  # and why
    assert points["a0b1c2"]["altitude_text"] == "1,000 m"
    assert points["c0ffee"]["vertical_rate_text"] == "-20.0 m/s"


def test_the_map_json_carries_the_points_as_pandas_writes_them_and_nothing_else():
    live = gold.to_arrow("gold.live_flights", gold.live_rows(gold.LATEST)).to_pandas()
    live.loc[0, "vertical_rate"] = float("nan")
    points = charts.map_points(live, selected="c0ffee")
    spec = charts.deck(points, charts.view_for(live))
    text = spec.to_json()
    assert ": " not in text[:2000] and "\n" not in text  # compact
    parsed = json.loads(text)
    data = layer(parsed, "aircraft")["data"]
    assert data == json.loads(points.assign(icon="arrow").to_json(orient="records"))  # NaN as null
    assert [p["icao24"] for p in data] == points.icao24.tolist()  # drawing order kept
    assert [p["reasons"] != "" for p in data] == [s != "normal" for s in points.state]
    assert "splice" not in text and "@@records" not in text
    assert spec.to_json() == text  # the frame is still there for the next serialisation
    assert layer(parsed, "borders")["data"]  # the other layers as pydeck writes them


def test_selecting_an_aircraft_draws_its_trail_and_keeps_the_view_on_refresh(lakehouse):
    at = run_app()
    first_view = deck_spec(at)["initialViewState"]
    at.run()  # a refresh does not move the view
    assert deck_spec(at)["initialViewState"] == first_view

    at.selectbox(key="aircraft_box").set_value("c0ffee").run()
    spec = deck_spec(at)
    trail = layer(spec, "trail")["data"][0]["path"]
    # c0ffee is live from version 2 on: one position per version, oldest first.
    assert trail == [list(gold.position("c0ffee", v)[:2]) for v in range(2, gold.LATEST + 1)]
    lon, lat, _ = gold.position("c0ffee", gold.LATEST)
    assert spec["initialViewState"] == {"latitude": lat, "longitude": lon, "zoom": 6.0}
    at.run()
    assert deck_spec(at)["initialViewState"] == spec["initialViewState"]


def test_filters_narrow_map_kpis_and_feed(lakehouse):
    at = run_app()
    at.multiselect(key="f_countries").set_value(["Canada"]).run()
    assert kpis_of(at)["Live aircraft"][0] == "1"
    assert [p["icao24"] for p in layer(deck_spec(at), "aircraft")["data"]] == ["c0ffee"]
    at.multiselect(key="f_countries").set_value([]).run()
    at.multiselect(key="f_rules").set_value([data.ML_RULE]).run()
    assert at.dataframe[0].value.icao24.tolist() == ["e48d4f"]
    at.multiselect(key="f_rules").set_value([]).run()
    at.slider(key="f_altitude").set_value((7000.0, 11000.0)).run()
    assert sorted(p["icao24"] for p in layer(deck_spec(at), "aircraft")["data"]) == ["3c6444", "400abc"]


def test_empty_state_names_what_to_run(settings):
    at = run_app()
    text = " ".join(i.value for i in at.info)
    assert "No gold data yet" in text and "opensky-lakehouse run all" in text and "make demo" in text
    assert "gold.live_flights" in text
    assert not at.metric


def test_stale_gold_shows_a_warning(lakehouse, monkeypatch):
    assert not [w for w in at_warnings(run_app()) if "stale" in w]
    monkeypatch.setenv("OPENSKY_LAKEHOUSE_DASHBOARD__STALE_AFTER_S", "0.001")
    assert [w for w in at_warnings(run_app()) if "stale" in w]


def at_warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


def test_reader_refreshes_incrementally_and_reads_other_tables_as_of_a_moment(settings):
    gold.build_gold(settings, versions=3)  # live_flights versions 0..2
    reader = data.GoldReader(settings)
    assert all(reader.refresh().values())
    assert reader.history().version.tolist() == [0, 1, 2]
    early = reader.history()
    assert reader.anomalies(reader.moment(1), 60).empty  # nothing flagged before version 2
    assert reader.anomalies(reader.moment(2), 60).icao24.tolist() == ["c0ffee"]

    gold.build_gold(settings, start=3)  # the job goes on: versions 3..LATEST
    reader.refresh()
    history = reader.history()
    assert history.version.tolist() == list(range(gold.LATEST + 1))
    assert history.head(3).equals(early)  # the commits known before were kept, not read again
    assert data.kpis(reader.live(gold.LATEST)) == gold.EXPECTED[gold.LATEST]
    assert data.kpis(reader.live(1)) == gold.EXPECTED[1]


def test_decoded_versions_are_bounded_in_bytes_and_per_table(settings):
    gold.build_gold(settings)
    reader = data.GoldReader(settings.replace(dashboard={"cache_versions": 3}))
    reader.refresh()
    live = reader.sources[data.LIVE]
    sizes = {v: int(live.read(v, data.LIVE_COLUMNS).memory_usage(deep=True).sum()) for v in range(gold.LATEST + 1)}
    assert len(reader.cache) == 3  # the newest three live versions, the others out first
    assert [live.cached(v, data.LIVE_COLUMNS) is not None for v in range(gold.LATEST + 1)][-3:] == [True] * 3
    assert reader.cache.nbytes == sum(sizes[v] for v in range(gold.LATEST - 2, gold.LATEST + 1))

    # a budget of about two versions: the least recently used goes, whatever the table; a version
    # read again comes back from the table, the same rows
    cache = data.FrameCache(max_bytes=2 * max(sizes.values()) + 1, per_table=64)
    for source in reader.sources.values():
        source.cache = cache
    first = live.read(1, data.LIVE_COLUMNS)
    for v in range(2, gold.LATEST + 1):
        live.read(v, data.LIVE_COLUMNS)
        assert cache.nbytes <= cache.max_bytes
    assert live.cached(1, data.LIVE_COLUMNS) is None and live.cached(gold.LATEST, data.LIVE_COLUMNS) is not None
    assert live.read(1, data.LIVE_COLUMNS).equals(first)
    assert data.kpis(reader.live(1)) == gold.EXPECTED[1]

    # one frame over the whole budget still stays (the page that read it uses it), alone
    tiny = data.FrameCache(max_bytes=1, per_table=64)
    tiny.put("t", ("a",), first)
    tiny.put("t", ("b",), first)
    assert len(tiny) == 1 and tiny.get("t", ("b",)) is first and tiny.get("t", ("a",)) is None
    tiny.clear("t")
    assert len(tiny) == 0 and tiny.nbytes == 0


def test_kpis_and_filters_are_plain_functions():
    live = gold.to_arrow("gold.live_flights", gold.live_rows(2)).to_pandas()
    assert data.kpis(live) == gold.EXPECTED[2]
    assert data.kpis(live.iloc[0:0]) == gold.EXPECTED[0]
    assert data.apply_filters(live, rules=["emergency_squawk"]).icao24.tolist() == ["c0ffee"]
    assert data.apply_filters(live, countries=["Ireland", "Germany"]).icao24.tolist() == ["4ca1d3", "3c6444"]
