"""Run layer jobs: ``run bronze|silver|gold|all [--once]``.

Without ``--once`` the queries stream until SIGINT/SIGTERM. ``--once`` processes what is
available and exits 0.

``all`` runs the pipeline job (``lakehouse.jobs.pipeline``): one query that writes bronze, silver
and gold from each batch of Kafka records, so a state reaches gold in one trigger. On a root that
the layer jobs already feed (their checkpoints exist and the pipeline's does not), ``all`` runs
them instead, as before: with ``--once`` one after the other (bronze, silver, gold), streaming
as three concurrent queries in one Spark application. A layer job refuses a root the pipeline
feeds: each keeps its own progress, so mixing them would read records twice.
"""

from __future__ import annotations

import logging
import sys

from lakehouse.jobs.layers import LAYERS, run_layers

log = logging.getLogger("lakehouse.jobs")


def configure(parser) -> None:
    parser.add_argument("layer", choices=(*LAYERS, "all"))
    parser.add_argument("--once", action="store_true", help="process what is available, then exit 0")


def run(args, settings) -> int:
    from lakehouse.status import feeding_mode, layer_checkpoints, pipeline_started

    if args.layer == "all":
        if feeding_mode(settings) == "pipeline":
            return run_layers(settings, ["pipeline"], once=args.once)
        log.info("run all: this root is fed by the layer jobs (checkpoints of %s), so they run as separate "
                 "queries; a new root runs the single-query pipeline", ", ".join(layer_checkpoints(settings)))
        return run_layers(settings, list(LAYERS), once=args.once)
    if pipeline_started(settings):
        print(f"run {args.layer}: {settings.storage.root} is fed by `run all` (one query for every layer, "
              "checkpoint _checkpoints/all/pipeline); a layer job of its own would read the same records again.\n"
              "  Use `opensky-lakehouse run all`, or give the layer jobs a new storage.root.", file=sys.stderr)
        return 2
    return run_layers(settings, [args.layer], once=args.once)
