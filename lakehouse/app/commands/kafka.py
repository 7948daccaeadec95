"""Start, stop or inspect the embedded single-node Kafka broker (KRaft) on 127.0.0.1.

``kafka start`` fetches the broker jars once (cached), formats storage the first time, starts
the broker in the background and creates the topic; ``kafka stop`` shuts it down cleanly;
``kafka status`` prints whether it is up with the topic's partitions and end offsets.
"""

from __future__ import annotations

import json
import sys


def configure(parser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--json", action="store_true", help="print status as JSON")


def run(args, settings) -> int:
    from lakehouse.local import kafka_broker

    try:
        if args.action == "start":
            info = kafka_broker.start(settings)
        elif args.action == "stop":
            stopped = kafka_broker.stop(settings)
            print("kafka: stopped" if stopped else "kafka: not running")
            return 0
        else:
            info = kafka_broker.status(settings)
    except kafka_broker.BrokerError as exc:
        print(f"kafka {args.action}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info))
    else:
        print(format_status(info))
    return 0 if (args.action != "status" or info["serving"]) else 3


def format_status(info: dict) -> str:
    if not info["serving"]:
        state = "not running" if not info["running"] else f"starting (pid {info['pid']})"
        return f"kafka: {state} at {info['bootstrap_servers']} (data {info['data_dir']})"
    owner = f"pid {info['pid']}" if info["pid"] else "external broker"
    lines = [f"kafka: up at {info['bootstrap_servers']} ({owner}, data {info['data_dir']})"]
    if "error" in info:
        lines.append(f"  topic {info['topic']}: {info['error']}")
    elif info.get("partitions"):
        offsets = ", ".join(f"p{p}={o}" for p, o in sorted(info["end_offsets"].items()))
        lines.append(f"  topic {info['topic']}: {info['partitions']} partitions, "
                     f"{info['records']} records, end offsets {offsets}")
    else:
        lines.append(f"  topic {info['topic']}: does not exist (run `opensky-lakehouse kafka start`)")
    return "\n".join(lines)
