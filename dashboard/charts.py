"""Pure chart builders: frames in, pydeck decks and plotly figures out. No I/O, no Streamlit.

Units stay SI as the tables hold them (m, m/s, degrees); only labels format them.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pydeck as pdk
from plotly.subplots import make_subplots

from dashboard.data import rule_list

# Aircraft state -> (label, RGB). ML first: a model flag and a rule flag together are "both".
STATES = {
    "normal": ("normal", [30, 136, 229]),
    "rule": ("rule anomaly", [255, 143, 0]),
    "ml": ("ML anomaly", [229, 57, 53]),
    "both": ("rule + ML anomaly", [171, 71, 188]),
}
TRAIL_COLOR = [255, 214, 0]
ALTITUDE_BANDS_M = (-500.0, 25000.0)

# An arrow pointing north (assets/arrow.png), sent once as the layer's icon atlas (not per
# aircraft); "mask" mode paints it in each row's colour. Quoted: pydeck would read a bare string
# as a JavaScript expression.
ARROW_ATLAS = "'data:image/png;base64," + base64.b64encode(
    (Path(__file__).parent / "assets" / "arrow.png").read_bytes()).decode() + "'"
ARROW_MAPPING = {"arrow": {"x": 0, "y": 0, "width": 64, "height": 64, "anchorY": 32, "mask": True}}

TOOLTIP = {
    "html": (
        "<b>{callsign_text}</b> · {icao24}<br/>{origin_country}<br/>"
        "altitude {altitude_text}<br/>speed {speed_text}<br/>vertical rate {vertical_rate_text}<br/>"
        "<b>{state_label}</b> {reasons}"
    ),
    "style": {"fontSize": "12px"},
}


def aircraft_state(frame: pd.DataFrame) -> pd.Series:
    """normal / rule / ml / both per row, from ``rule_anomaly`` and ``ml_anomaly``."""
    rule = frame.rule_anomaly.fillna(False).astype(bool) if "rule_anomaly" in frame else False
    ml = frame.ml_anomaly.fillna(False).astype(bool)
    state = pd.Series("normal", index=frame.index)
    state[rule & ~ml] = "rule"
    state[ml & ~rule] = "ml"
    state[ml & rule] = "both"
    return state


def _fmt(value, unit: str, digits: int = 0) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:,.{digits}f} {unit}"


def reasons(row) -> str:
    """The rules that fired and the model's verdict, as one line."""
    parts = rule_list(row.get("rules"))
    score = row.get("anomaly_score")
    if row.get("ml_anomaly"):
        why = row.get("ml_reason")
        parts.append((f"ML score {score:.2f}" if score is not None and not pd.isna(score) else "ML")
                     + (f" ({why})" if isinstance(why, str) and why else ""))
    return ", ".join(parts)


def _reasons(frame: pd.DataFrame) -> pd.Series:
    """:func:`reasons` of each row; only rows with a rule or the model's flag have any (a record
    dict for each of 50,000 aircraft cost more than the rest of the map)."""
    out = pd.Series("", index=frame.index, dtype=object)
    ml = frame.ml_anomaly.fillna(False).astype(bool)
    some = ml | frame.rules.map(lambda r: bool(rule_list(r))).astype(bool)
    if some.any():
        out[some] = [reasons(row) for row in frame[some].to_dict("records")]
    return out


def map_points(live: pd.DataFrame, selected: str | None = None) -> pd.DataFrame:
    """One JSON-safe row per aircraft with a position: where, heading, colour, tooltip text."""
    frame = live.dropna(subset=["longitude", "latitude"]).reset_index(drop=True)
    state = aircraft_state(frame)
    track = frame.true_track.fillna(0.0).astype(float)
    points = pd.DataFrame({
        "icao24": frame.icao24.astype(str),
        "callsign_text": frame.callsign.fillna("").astype(str).where(frame.callsign.notna(), "(no callsign)"),
        "origin_country": frame.origin_country.fillna("").astype(str),
        "longitude": frame.longitude.astype(float).round(5),  # 5 decimals: about 1 m
        "latitude": frame.latitude.astype(float).round(5),
        # deck.gl turns icons counter-clockwise; true_track is clockwise from north.
        "angle": ((-track) % 360.0).round(1),
        "state": state,
        "state_label": state.map(lambda s: STATES[s][0]),
        "color": state.map(lambda s: STATES[s][1] + [235]),
        "size": 16,
        "altitude_text": frame.baro_altitude.map(lambda v: _fmt(v, "m")).where(
            ~frame.on_ground.fillna(False).astype(bool), "on ground"),
        "speed_text": frame.velocity.map(lambda v: _fmt(v, "m/s")),
        "vertical_rate_text": frame.vertical_rate.map(lambda v: _fmt(v, "m/s", 1)),
        "reasons": _reasons(frame),
    })
    points.loc[points.state != "normal", "size"] = 24
    if selected is not None:
        points.loc[points.icao24 == selected, "size"] = 34
    # Drawn in this order: anomalies and the selected aircraft on top of normal traffic.
    order = points.state.map({"normal": 0, "rule": 1, "ml": 2, "both": 3}) + (points.icao24 == selected) * 10
    return points.iloc[order.argsort(kind="stable")].reset_index(drop=True)


def view_for(live: pd.DataFrame) -> dict:
    """A view fitting the aircraft (the whole world when they spread wide or there are none)."""
    frame = live.dropna(subset=["longitude", "latitude"]) if not live.empty else live
    if frame.empty:
        return {"latitude": 30.0, "longitude": 0.0, "zoom": 1.0}
    lon_lo, lon_hi = frame.longitude.quantile([0.02, 0.98])
    lat_lo, lat_hi = frame.latitude.quantile([0.02, 0.98])
    extent = max(lon_hi - lon_lo, (lat_hi - lat_lo) * 1.6, 0.5)
    zoom = max(1.0, min(9.0, 8.0 - math.log2(extent)))
    return {"latitude": float((lat_lo + lat_hi) / 2), "longitude": float((lon_lo + lon_hi) / 2),
            "zoom": round(zoom, 2)}


@functools.lru_cache(maxsize=1)
def basemap_paths() -> list[dict]:
    """Country borders and coastlines (Natural Earth 1:110m) as paths, decoded from TopoJSON."""
    topo = json.loads((Path(__file__).parent / "assets" / "countries-110m.json").read_text())
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    paths = []
    for arc in topo["arcs"]:
        x = y = 0
        path = []
        for dx, dy in arc:  # delta-encoded, quantized positions
            x, y = x + dx, y + dy
            point = [round(x * sx + tx, 3), round(y * sy + ty, 3)]
            if path and abs(point[0] - path[-1][0]) > 180:  # crosses the antimeridian: break the line
                paths.append({"path": path})
                path = []
            path.append(point)
        paths.append({"path": path})
    return paths


class CompactDeck(pdk.Deck):
    """A Deck whose JSON has no indentation (pydeck pretty-prints, which more than doubles what
    every refresh sends to the browser for thousands of aircraft), and whose big layers' records
    (``splice``: layer id -> frame) pandas writes straight into it: built as Python dicts and
    serialised by pydeck, 50,000 aircraft took ~2.5 s of the dashboard's CPU per refresh."""

    _MARK = "@@records of layer {}@@"

    def to_json(self) -> str:
        frames = self.__dict__.pop("splice", {})  # not an attribute pydeck would serialise
        try:
            spec = json.loads(super().to_json())
        finally:
            self.splice = frames
        for layer in spec["layers"]:
            if layer.get("id") in frames:
                layer["data"] = self._MARK.format(layer["id"])
        text = json.dumps(spec, separators=(",", ":"))
        for layer_id, frame in frames.items():
            # NaN as null, numpy scalars as plain numbers; keys sorted as pydeck sorts them
            records = frame[sorted(frame.columns)].to_json(orient="records")
            text = text.replace(json.dumps(self._MARK.format(layer_id)), records, 1)
        return text


# pydeck reads a bare string as a JavaScript accessor; quotes make it a plain string.
PIXELS = "'pixels'"


def deck(points: pd.DataFrame, view: dict, trail: pd.DataFrame | None = None,
         map_style: str | None = None) -> pdk.Deck:
    """The map: borders, the selected aircraft's trail, and one rotated arrow per aircraft."""
    layers = [pdk.Layer(
        "PathLayer", data=basemap_paths(), id="borders", get_path="path",
        get_color=[120, 130, 145, 160], width_units=PIXELS, get_width=1, pickable=False,
    )]
    if trail is not None and len(trail) > 1:
        path = trail[["longitude", "latitude"]].astype(float).values.tolist()
        layers.append(pdk.Layer(
            "PathLayer", data=[{"path": path}], id="trail", get_path="path", get_color=TRAIL_COLOR,
            width_units=PIXELS, get_width=3, pickable=False,
        ))
    layers.append(pdk.Layer(
        "IconLayer", data=[], id="aircraft", icon_atlas=ARROW_ATLAS, icon_mapping=ARROW_MAPPING,
        get_icon="icon", get_position=["longitude", "latitude"],
        get_angle="angle", get_color="color", get_size="size", size_units=PIXELS, pickable=True,
        auto_highlight=True,
    ))
    spec = CompactDeck(
        layers=layers,
        initial_view_state=pdk.ViewState(**view),
        map_style=map_style or None,
        map_provider="carto" if map_style else None,
        tooltip=TOOLTIP,
    )
    spec.splice = {"aircraft": points.assign(icon="arrow")}
    return spec


def window_trends(windows: pd.DataFrame) -> go.Figure:
    """Aircraft, mean vertical rate and anomalies per 2-minute window, stacked on one time axis."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("aircraft (distinct)", "mean vertical rate (m/s)", "anomalies"))
    x = windows.window_start if not windows.empty else []
    fig.add_trace(go.Scatter(x=x, y=windows.get("aircraft", []), mode="lines+markers", name="aircraft"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=windows.get("avg_vertical_rate", []), mode="lines+markers",
                             name="vertical rate"), row=2, col=1)
    fig.add_trace(go.Bar(x=x, y=windows.get("anomalies", []), name="anomalies",
                         marker_color="rgb(229,57,53)"), row=3, col=1)
    fig.update_layout(height=420, showlegend=False, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


def top_countries(countries: pd.DataFrame, n: int = 10) -> go.Figure:
    """The ``n`` origin countries with the most aircraft in the newest window."""
    top = countries.sort_values(["aircraft", "origin_country"], ascending=[False, True]).head(n)
    top = top.iloc[::-1]  # largest on top of a horizontal bar chart
    fig = go.Figure(go.Bar(x=top.get("aircraft", []), y=top.get("origin_country", []), orientation="h",
                           marker_color="rgb(30,136,229)"))
    title = "top origin countries"
    if not countries.empty:
        start = pd.Timestamp(countries.window_start.max())
        title += f" · window {start:%H:%M}–{start + pd.Timedelta(minutes=2):%H:%M} UTC"
    fig.update_layout(title=title, height=420, xaxis_title="aircraft",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def score_distribution(live: pd.DataFrame) -> go.Figure:
    """Histogram of the ML anomaly score of the live aircraft, flagged ones in red."""
    fig = go.Figure()
    scored = live.dropna(subset=["anomaly_score"]) if "anomaly_score" in live else live
    flagged = scored.ml_anomaly.fillna(False).astype(bool) if not scored.empty else pd.Series(dtype=bool)
    fig.add_trace(go.Histogram(x=scored.anomaly_score[~flagged] if not scored.empty else [],
                               name="normal", marker_color="rgb(30,136,229)", nbinsx=40))
    fig.add_trace(go.Histogram(x=scored.anomaly_score[flagged] if not scored.empty else [],
                               name="ML anomaly", marker_color="rgb(229,57,53)", nbinsx=40))
    fig.update_layout(title="anomaly score of live aircraft", barmode="overlay", height=420,
                      xaxis_title="anomaly score", yaxis_title="aircraft",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    fig.update_traces(opacity=0.8)
    return fig


def feed_table(feed: pd.DataFrame) -> pd.DataFrame:
    """The anomaly feed as shown: newest first, rules joined, score rounded, times as UTC."""
    if feed.empty:
        return pd.DataFrame(columns=["time (UTC)", "callsign", "icao24", "country", "rules", "score",
                                     "ML", "why (model)", "states"])
    return pd.DataFrame({
        "time (UTC)": pd.to_datetime(feed.event_time, utc=True).dt.strftime("%Y-%m-%d %H:%M:%S"),
        "callsign": feed.callsign.fillna(""),
        "icao24": feed.icao24,
        "country": feed.origin_country,
        "rules": feed.rules.map(lambda cell: ", ".join(rule_list(cell))),
        "score": feed.anomaly_score.round(3),
        "ML": feed.ml_anomaly.fillna(False).astype(bool),
        "why (model)": feed.ml_reason.fillna("") if "ml_reason" in feed else "",
        "states": feed.states,
    })
