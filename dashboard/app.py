"""The dashboard page: the sky and the statistics of the gold tables at any moment they hold.

Run with ``opensky-lakehouse dashboard`` (settings handed over as OPENSKY_LAKEHOUSE_* variables)
or ``streamlit run dashboard/app.py`` (settings from conf/ and the environment). The page only
arranges things: reading is ``dashboard.data``, drawing is ``dashboard.charts``. The live part
is a fragment re-run every ``dashboard.refresh_s`` seconds (every ``play_interval_s`` while
playing through history), so nothing sleeps and the sidebar does not re-run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the project: add the
# checkout this file belongs to, so that it (not another installed copy) is imported.
_PROJECT = str(Path(__file__).resolve().parent.parent)
if _PROJECT not in sys.path:
    sys.path.insert(0, _PROJECT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from dashboard import charts, data  # noqa: E402
from lakehouse.settings import ConfigError, Settings, load_settings  # noqa: E402

st.set_page_config(page_title="OpenSky lakehouse", page_icon="✈️", layout="wide")

# Session state: follow the newest version ("live") or stay on st.session_state.version.
_DEFAULTS = {"live": True, "play": False, "aircraft": None, "view": None, "versions": []}


def _init_state() -> None:
    for name, value in _DEFAULTS.items():
        st.session_state.setdefault(name, value)


# -- callbacks (run before the re-run they trigger) -----------------------------------------------
def _on_slide() -> None:
    versions = st.session_state.versions
    st.session_state.live = bool(versions) and st.session_state.version == versions[-1]
    st.session_state.play = False


def _step(offset: int) -> None:
    versions = st.session_state.versions
    if not versions:
        return
    current = st.session_state.get("version", versions[-1])
    i = versions.index(current) if current in versions else len(versions) - 1
    i = min(max(i + offset, 0), len(versions) - 1)
    st.session_state.version = versions[i]
    st.session_state.live = i == len(versions) - 1
    st.session_state.play = False


def _go_live() -> None:
    st.session_state.live = True
    st.session_state.play = False


def _toggle_play() -> None:
    versions = st.session_state.versions
    st.session_state.play = not st.session_state.play
    if st.session_state.play and versions and (st.session_state.live or st.session_state.get("version") == versions[-1]):
        st.session_state.version = versions[0]  # from live, play the whole history held
        st.session_state.live = False


def _pick(icao24: str | None) -> None:
    if icao24 != st.session_state.aircraft:
        st.session_state.aircraft = icao24
        st.session_state.view = None if icao24 is None else {"follow": icao24}


def _on_pick_box() -> None:
    _pick(st.session_state.aircraft_box or None)


def _on_feed_select() -> None:
    rows = st.session_state.feed.selection.rows
    shown = st.session_state.get("feed_icao24", [])
    if rows and rows[0] < len(shown):
        _pick(shown[rows[0]])


def _on_map_select() -> None:
    objects = st.session_state.map.selection.objects.get("aircraft", [])
    if objects:
        _pick(objects[0].get("icao24"))


# -- page parts -------------------------------------------------------------------------------------
def empty_state(settings: Settings, exists: dict[str, bool]) -> None:
    missing = ", ".join(f"`{name}`" for name, ok in exists.items() if not ok)
    st.info(
        f"No gold data yet under `{settings.storage.root}` (missing: {missing}).\n\n"
        "Fill the lakehouse, then this page shows the sky by itself (it checks every "
        f"{settings.dashboard.refresh_s:g} s):\n\n"
        "```bash\n"
        "opensky-lakehouse kafka start\n"
        "opensky-lakehouse produce --source simulate     # or --source replay / opensky\n"
        "opensky-lakehouse run all                       # bronze -> silver -> gold\n"
        "```\n"
        "or everything at once on a recorded capture: `make demo`.",
        icon="🛫",
    )


def _fmt_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def freshness(settings: Settings, reader: data.GoldReader) -> None:
    newest = reader.newest_commit()
    if newest is None:
        return
    age = max(0.0, (pd.Timestamp.now(tz="UTC") - newest).total_seconds())
    if age > settings.dashboard.stale_after_s:
        st.warning(
            f"Gold data is stale: the newest gold commit is {_fmt_age(age)} old "
            f"(at {newest:%Y-%m-%d %H:%M:%S} UTC; warning after {settings.dashboard.stale_after_s:g} s). "
            "Is `opensky-lakehouse run gold` (or `run all`) running?",
            icon="⏱️",
        )
    return age


def _fmt_value(value, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}{unit}"


def kpi_cards(now: dict, before: dict | None, age: float | None) -> None:
    cards = [("Live aircraft", "live", "", "normal"), ("Airborne", "airborne", "", "normal"),
             ("Anomalies", "anomalies", "", "inverse"), ("Avg altitude", "altitude", " m", "normal"),
             ("Avg speed", "speed", " m/s", "normal")]
    columns = st.columns(len(cards) + 1)
    for column, (label, name, unit, colouring) in zip(columns, cards, strict=False):
        delta = None
        if before is not None and now[name] is not None and before[name] is not None:
            delta = f"{now[name] - before[name]:+,.0f}{unit}"
        column.metric(label, _fmt_value(now[name], unit), delta, delta_color=colouring)
    columns[-1].metric("Freshness", "–" if age is None else _fmt_age(age),
                       help="age of the newest commit to any gold table")


def history_slider(history: pd.DataFrame) -> None:
    versions = history.version.tolist()
    times = dict(zip(versions, history.committed_at, strict=True))
    step_back, slider, step_on, live = st.columns([1, 14, 1, 2], vertical_alignment="bottom")
    step_back.button("◀", on_click=_step, args=(-1,), help="one version back", key="back")
    slider.select_slider(
        "Moment (commit time of gold.live_flights, UTC)", options=versions, key="version",
        format_func=lambda v: f"{times[v]:%m-%d %H:%M:%S} · v{v}", on_change=_on_slide,
    )
    step_on.button("▶", on_click=_step, args=(1,), help="one version on", key="forward")
    live.button("● Live", on_click=_go_live, disabled=st.session_state.live, key="go_live",
                type="primary" if not st.session_state.live else "secondary")


def filters(live: pd.DataFrame, anomalies: pd.DataFrame) -> dict:
    countries_col, rules_col, altitude_col = st.columns([3, 3, 3])
    countries = sorted(set(live.origin_country.dropna()) | set(st.session_state.get("f_countries", [])))
    rules = sorted(set(data.rule_names(live, anomalies)) | set(st.session_state.get("f_rules", [])))
    lo, hi = charts.ALTITUDE_BANDS_M
    chosen = {
        "countries": countries_col.multiselect("Origin country", countries, key="f_countries"),
        "rules": rules_col.multiselect("Rule (or ml_anomaly)", rules, key="f_rules"),
        "altitude": altitude_col.slider("Altitude band (m)", lo, hi, (lo, hi), step=500.0, key="f_altitude"),
    }
    if chosen["altitude"] == (lo, hi):
        chosen["altitude"] = None  # the full band keeps aircraft without an altitude too
    return chosen


def the_map(settings: Settings, reader, moment, live: pd.DataFrame) -> None:
    aircraft = st.session_state.aircraft
    points = charts.map_points(live, selected=aircraft)
    view = st.session_state.view
    if isinstance(view, dict) and "follow" in view:  # just picked: centre on it once
        row = points[points.icao24 == view["follow"]]
        view = ({"latitude": float(row.latitude.iloc[0]), "longitude": float(row.longitude.iloc[0]), "zoom": 6.0}
                if not row.empty else None)
        st.session_state.view = view
    if view is None and not points.empty:
        # Fixed once: the same initial view on every refresh keeps the user's pan and zoom.
        view = st.session_state.view = charts.view_for(live)
    trail = None
    if aircraft:
        trail = reader.trail(aircraft, moment, settings.dashboard.trail_minutes,
                             settings.dashboard.trail_max_versions)
    deck = charts.deck(points, view or charts.view_for(live), trail)
    st.pydeck_chart(deck, height=520, key="map", on_select=_on_map_select, selection_mode="single-object")
    legend = " ".join(
        f"<span style='color:rgb({c[0]},{c[1]},{c[2]})'>▲</span> {label}" for label, c in charts.STATES.values()
    )
    st.caption(legend + (f" · <span style='color:rgb(255,214,0)'>━</span> trail of **{aircraft}** "
                         f"({0 if trail is None else len(trail)} positions, last "
                         f"{settings.dashboard.trail_minutes:g} min)" if aircraft else ""),
               unsafe_allow_html=True)


def anomaly_feed(feed: pd.DataFrame, live: pd.DataFrame) -> None:
    st.subheader("Anomaly feed")
    table = charts.feed_table(feed)
    st.session_state.feed_icao24 = table.icao24.tolist()
    st.dataframe(table, hide_index=True, height=360, key="feed", on_select=_on_feed_select,
                 selection_mode="single-row", width="stretch")
    options = [""] + list(dict.fromkeys(table.icao24.tolist() + sorted(live.icao24.dropna().tolist())))
    if st.session_state.aircraft and st.session_state.aircraft not in options:
        options.append(st.session_state.aircraft)
    st.session_state.aircraft_box = st.session_state.aircraft or ""
    st.selectbox("Selected aircraft (trail on the map)", options, key="aircraft_box", on_change=_on_pick_box,
                 format_func=lambda v: v or "(none)")


def live_page(settings: Settings) -> None:
    started = time.perf_counter()
    reader = data.get_reader(settings)
    exists = reader.refresh()
    if not exists[data.LIVE] or reader.history().empty:
        empty_state(settings, exists)
        return
    history = reader.history()
    versions = history.version.tolist()
    st.session_state.versions = versions
    if st.session_state.play:
        current = st.session_state.get("version", versions[0])
        following = [v for v in versions if v > current]
        if following:
            st.session_state.version = following[0]
        else:  # played up to now: follow live again, at the refresh pace
            st.session_state.play = False
            st.session_state.live = True
            st.rerun(scope="app")
    if st.session_state.live or st.session_state.get("version") not in versions:
        st.session_state.version = versions[-1]
        st.session_state.live = True

    age = freshness(settings, reader)
    history_slider(history)
    try:
        moment = reader.moment(st.session_state.version)
        live_all = reader.live(moment.version)
        before_all = reader.live(moment.previous) if moment.previous is not None else None
        flagged = reader.anomalies(moment, settings.dashboard.feed_minutes)
    except data.VersionUnavailable as exc:
        st.warning(f"{exc}. Showing the newest version instead.")
        st.session_state.live = True
        return
    if not moment.latest:
        st.info(f"Viewing history: the sky as of {moment.committed_at:%Y-%m-%d %H:%M:%S} UTC "
                f"(version {moment.version} of {versions[-1]}). Press **● Live** to follow new data.",
                icon="🕰️")
    chosen = filters(live_all, flagged)
    live = data.apply_filters(live_all, **chosen)
    before = data.kpis(data.apply_filters(before_all, **chosen)) if before_all is not None else None
    kpi_cards(data.kpis(live), before, age)

    map_col, feed_col = st.columns([3, 2])
    with map_col:
        the_map(settings, reader, moment, live)
    with feed_col:
        anomaly_feed(data.feed(data.apply_filters(flagged, **chosen), settings.dashboard.feed_rows), live)

    trends, top, scores = st.columns(3)
    with trends:
        st.plotly_chart(charts.window_trends(reader.windows(moment, settings.dashboard.trend_minutes)),
                        key="trends", width="stretch")
    with top:
        st.plotly_chart(charts.top_countries(reader.countries(moment)), key="countries", width="stretch")
    with scores:
        st.plotly_chart(charts.score_distribution(live), key="scores", width="stretch")
    st.caption(f"Shown: gold.live_flights version {moment.version} · built in "
               f"{(time.perf_counter() - started) * 1000:.0f} ms", help="read and drawn by this server")


def main() -> None:
    _init_state()
    try:
        settings = load_settings()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
    st.title("✈️ OpenSky lakehouse")
    with st.sidebar:
        st.button("⟳ Refresh now", key="refresh", width="stretch")
        st.button("⏸ Pause" if st.session_state.play else "▶ Play history", key="play_button",
                  on_click=_toggle_play, width="stretch")
        st.caption(f"lakehouse `{settings.storage.root}` · refresh every {settings.dashboard.refresh_s:g} s · "
                   "gold read with delta-rs")
    every = settings.dashboard.play_interval_s if st.session_state.play else settings.dashboard.refresh_s
    st.fragment(run_every=every)(live_page)(settings)


main()
