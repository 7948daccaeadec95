"""Show the broker, every table's version, last commit and rows, the bronze job's Kafka lag and
the silver accounting (bronze = flights + quarantine + duplicates dropped).

Reads Delta logs with delta-rs and Kafka with kafka-python: no Spark start, answers in seconds.
"""

from __future__ import annotations

import json


def configure(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")


def run(args, settings) -> int:
    from lakehouse.app.commands.kafka import format_status
    from lakehouse.local.kafka_broker import status as broker_status
    from lakehouse.status import lakehouse_status

    broker = broker_status(settings)
    info = lakehouse_status(settings) if broker["serving"] else lakehouse_status_offline(settings)
    info["broker"] = broker
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    print(format_status(broker))
    print(f"lakehouse root: {settings.storage.root}")
    for t in info["tables"]:
        if not t["exists"]:
            print(f"  {t['table']:<24} (not created yet)")
        else:
            print(f"  {t['table']:<24} v{t['version']:<6} {t['rows']:>12,} rows  last commit {t['last_commit']}")
    lag = info["bronze_kafka"]
    if lag.get("available"):
        print(f"bronze job Kafka lag: {lag['lag']:,} records")
    for line in info.get("accounting_lines", []):
        print(line)
    return 0


def lakehouse_status_offline(settings) -> dict:
    from lakehouse.status import lakehouse_status

    return lakehouse_status(settings, kafka=False)
