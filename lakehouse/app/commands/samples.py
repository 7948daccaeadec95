"""Real recorded traffic: ``opensky-lakehouse samples fetch NAME [--out FILE]``.

Fetches the ``traffic==2.13`` wheel (cached under ``spark.cache_dir``; nothing is installed),
reads the sample ``NAME`` (``quickstart``: about 3 hours of traffic around Paris on 2021-10-07,
213 aircraft) and writes a replay file (default ``data/samples/<NAME>.jsonl.gz``), one
``/states/all`` response per line, in OpenSky's SI units (see ``ingestion.samples``).
``samples list`` shows the sample names available in the wheel.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ingestion.samples import (
    SNAPSHOT_EVERY_S,
    TRAFFIC_VERSION,
    DownloadError,
    fetch_wheel,
    read_sample,
    sample_names,
    to_responses,
    write_replay,
)
from lakehouse.records import FIELD_INDEX

log = logging.getLogger("ingestion.samples")


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="samples_command", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="write a replay file from a traffic sample collection")
    fetch.add_argument("name", help="sample name, e.g. quickstart, switzerland, savan")
    fetch.add_argument("--out", metavar="FILE", help="replay file to write (default data/samples/NAME.jsonl.gz)")
    fetch.add_argument("--skip-minutes", type=float, default=0.0, help="start this many minutes into the sample")
    fetch.add_argument("--minutes", type=float, default=0.0, help="keep only this many minutes (0 = all)")
    sub.add_parser("list", help="list the sample names in the traffic wheel")


def run(args, settings) -> int:
    try:
        wheel = fetch_wheel(settings.spark.cache_dir)
    except DownloadError as exc:
        print(f"samples: {exc}", file=sys.stderr)
        return 1
    if args.samples_command == "list":
        for name in sorted(sample_names(wheel)):
            print(name)
        return 0
    try:
        frame = read_sample(wheel, args.name)
    except (KeyError, ValueError) as exc:
        print(f"samples: {exc.args[0]}", file=sys.stderr)
        return 1
    out = Path(args.out or f"data/samples/{args.name}.jsonl.gz")
    responses = to_responses(frame, skip_minutes=args.skip_minutes, minutes=args.minutes)
    states = write_replay(responses, out)
    aircraft = len({row[FIELD_INDEX["icao24"]] for r in responses for row in (r["states"] or ())})
    log.info("samples: wrote %s: %d snapshots every %d s, %d states, %d aircraft (traffic==%s, %s)",
             out, len(responses), SNAPSHOT_EVERY_S, states, aircraft, TRAFFIC_VERSION, args.name)
    return 0
