"""Send state vectors to Kafka: ``opensky-lakehouse produce --source opensky|replay|simulate``.

    produce --source opensky [--bbox LAMIN,LOMIN,LAMAX,LOMAX] [--max-polls N]
    produce --source replay --path FILE [FILE...] [--speedup N|max] [--loop]
    produce --source simulate [--aircraft N] [--seed S] [--anomaly-rate F] [--anomaly-kinds rules|all]
            [--snapshots N] [--labels FILE] [--speedup N|max]
    common: [--record FILE] [--max-records N] [--duration SECONDS]

One Kafka record per state vector (ARCHITECTURE.md), key ``icao24``, idempotent producer with
``acks=all``. ``--record`` appends every response sent, in the replay format. ``--loop`` replays
forever, shifting all times forward so each pass continues where the previous one ended.
Shifted or simulated times never run ahead of the wall clock (silver rejects a position later
than its Kafka append time): a looped replay's first pass is placed so that at ``--speedup N`` it
catches up with the clock as it ends, and from then on the pace is real time; a simulation
at ``--speedup`` above 1 starts as far in the past as its ``--snapshots`` need, and otherwise
waits for the clock. SIGINT/SIGTERM stop cleanly: outstanding records are flushed and a
final line reports what was sent and what failed. Exit status: 0 all delivered, 1 a record
failed delivery or the source failed, 2 bad arguments or configuration.
OpenSky credentials: ``OPENSKY_CLIENT_ID`` / ``OPENSKY_CLIENT_SECRET`` (environment or ``.env``).
"""

from __future__ import annotations

import logging
import time

from ingestion.feeds import Emitter, Stop, parse_speedup, run_opensky, run_replay, run_simulate

log = logging.getLogger("ingestion")


def configure(parser) -> None:
    parser.add_argument("--source", choices=("opensky", "replay", "simulate"), required=True)
    parser.add_argument("--path", nargs="+", metavar="FILE", help="replay file(s), plain or gzip (replay)")
    parser.add_argument("--speedup", default=None,
                        help="replay/simulate pace: N times real time, or max (default 1 for replay and simulate)")
    parser.add_argument("--loop", action="store_true", help="replay forever, times shifted to look live")
    parser.add_argument("--record", metavar="FILE", help="also append each response to this replay file")
    parser.add_argument("--max-records", type=int, metavar="N", help="stop after exactly N records")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    parser.add_argument("--bbox", help="opensky: lamin,lomin,lamax,lomax (overrides opensky.bbox)")
    parser.add_argument("--max-polls", type=int, metavar="N", help="opensky: stop after N polls")
    parser.add_argument("--aircraft", type=int, help="simulate: number of aircraft (simulator.aircraft)")
    parser.add_argument("--seed", type=int, help="simulate: random seed (simulator.seed)")
    parser.add_argument("--anomaly-rate", type=float, help="simulate: fraction of aircraft with an anomaly")
    parser.add_argument("--anomaly-kinds", choices=("rules", "all"), default="rules",
                        help="simulate: inject the kinds a safety rule names (default) or also the kinds "
                             "no rule can see (ingestion.simulator.MODEL_KINDS)")
    parser.add_argument("--snapshots", type=int, metavar="N", help="simulate: stop after N snapshots")
    parser.add_argument("--start-time", type=int, metavar="EPOCH_S", help="simulate: time of the first snapshot")
    parser.add_argument("--labels", metavar="FILE", help="simulate: write the anomaly labels CSV here")


def run(args, settings) -> int:
    from ingestion.producer import ProducerError, StateProducer
    from ingestion.replay import ReplayWriter

    try:
        speedup = parse_speedup(args.speedup)
    except ValueError:
        log.error("produce: --speedup must be a number greater than 0 or 'max', got %r", args.speedup)
        return 2
    if args.max_records is not None and args.max_records < 0:
        log.error("produce: --max-records must be 0 or more")
        return 2
    source = {"simulate": "simulator"}.get(args.source, args.source)
    try:
        producer = StateProducer(settings, source)
    except ProducerError as exc:
        log.error("produce: %s", exc)
        return 1
    stop = Stop()
    stop.install()
    recorder = ReplayWriter(args.record) if args.record else None
    emitter = Emitter(producer, recorder, args.max_records, settings.producer.log_every_s)
    log.info("produce: %s -> Kafka %s topic %s (idempotent, acks=all, %s compression)", args.source,
             settings.kafka.bootstrap_servers, settings.kafka.topic, settings.producer.compression)
    status = 1
    try:
        if args.source == "replay":
            status = run_replay(args, emitter, stop, speedup)
        elif args.source == "simulate":
            status = run_simulate(args, settings, emitter, stop, speedup)
        else:
            status = run_opensky(args, settings, emitter, stop)
    except FileNotFoundError as exc:
        log.error("produce: %s", exc)
    finally:
        delivery = producer.close()
        emitter.sent += delivery.sent
        emitter.failed += delivery.failed
        if recorder is not None:
            recorder.close()
        elapsed = time.monotonic() - emitter.started
        why = f" (stopped by {stop.signal})" if stop.signal else ""
        log.info("produce: done%s: %d responses, %d states, %d sent, %d failed, %d pending in %.1f s (%.0f records/s)",
                 why, emitter.responses, emitter.states, emitter.sent, emitter.failed, delivery.pending, elapsed,
                 emitter.sent / max(elapsed, 1e-9))
    if emitter.failed or delivery.pending:
        log.error("produce: %d record(s) were not delivered", emitter.failed + delivery.pending)
        return 1
    return status
