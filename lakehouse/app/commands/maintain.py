"""Keep every table healthy: ``maintain [--table NAME ...] [--retention-hours H] [--no-optimize]
[--no-vacuum]``.

For each existing table of the catalog (internal bookkeeping tables included): OPTIMIZE compacts
the small files every micro-batch leaves; VACUUM deletes data files no version younger than the
retention needs (``maintain.retention_hours``, default 168: seven days of time travel kept; at most
``maintain.live_retention_hours``, default 24, for ``gold.live_flights``, a whole snapshot per version). The
log stays short by itself: every table is written with a checkpoint each 10 commits (100 for the
tables every micro-batch commits to) and a log retention equal to the same hours, and statistics of its keys only
(``lakehouse.table_setup.table_properties``); a table whose properties differ from the configuration
(a table made by an older version) is brought in line first. Afterwards each table is
opened and counted with ``deltalake`` (delta-rs), which is what the dashboard uses: a table it
cannot read makes the command fail, naming the table.

Safe while the jobs stream on a local or HDFS root: compaction commits do not change data (streams
reading the table skip them) and conflict with no append. On S3 with the single-driver log store
(``storage.root`` = ``s3a://...``) every writer of a table must be one driver: run it while the jobs
are stopped, or configure Delta's DynamoDB log store (docs/scaling.md). Should a commit race one
of a job's own (``gold.live_flights`` is rewritten each batch), that table is reported and the
others are still maintained; run it again. Exit status 0 when every table was maintained and read back, 1 otherwise.
"""

from __future__ import annotations

import logging
import math
import sys
import time

log = logging.getLogger("lakehouse.maintain")


def configure(parser) -> None:
    parser.add_argument("--table", action="append", metavar="NAME", help="only this table (repeatable)")
    parser.add_argument("--retention-hours", type=float, metavar="H",
                        help="time travel kept by VACUUM (default: maintain.retention_hours; "
                             "gold.live_flights at most maintain.live_retention_hours)")
    parser.add_argument("--no-optimize", action="store_true", help="skip compaction")
    parser.add_argument("--no-vacuum", action="store_true", help="skip VACUUM")


def run(args, settings) -> int:
    from lakehouse.catalog import TABLES

    names = args.table or list(TABLES)
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        print(f"maintain: unknown table {', '.join(unknown)}; known: {', '.join(TABLES)}", file=sys.stderr)
        return 2
    hours = settings.maintain.retention_hours if args.retention_hours is None else args.retention_hours
    if hours < 0:
        print("maintain: --retention-hours must be >= 0", file=sys.stderr)
        return 2
    if hours != math.ceil(hours):
        # Delta's VACUUM rounds the retention to whole hours (0.4 h would keep no time travel at
        # all): round up, never keep less than asked.
        log.warning("maintain: Delta keeps whole hours of time travel: retention %g h rounded up to %d h",
                    hours, math.ceil(hours))
        hours = math.ceil(hours)
    optimize = settings.maintain.optimize and not args.no_optimize
    vacuum = settings.maintain.vacuum and not args.no_vacuum
    results = maintain(settings, names, hours, optimize=optimize, vacuum=vacuum)
    failed = [r for r in results if r.get("error")]
    for r in failed:
        print(f"maintain: {r['table']}: {r['error']}", file=sys.stderr)
    if failed:
        print("maintain: the other tables were maintained; run `opensky-lakehouse maintain --table NAME` "
              "again for the failed ones.", file=sys.stderr)
    return 1 if failed else 0


def layout(settings, name: str) -> dict | None:
    """Version, data files and bytes of the current version, by delta-rs; ``None`` if absent."""
    from deltalake.exceptions import TableNotFoundError

    from lakehouse.delta_rs import open_table

    try:
        dt = open_table(settings, name)
    except TableNotFoundError:
        return None
    actions = dt.get_add_actions(flatten=True)
    sizes = actions.column("size_bytes").to_pylist() if actions.num_rows else []
    return {"version": dt.version(), "files": actions.num_rows, "bytes": int(sum(sizes))}


def read_back(settings, name: str) -> int:
    """Open and count ``name`` with delta-rs: the dashboard's reader must handle every table."""
    from lakehouse.delta_rs import open_table

    return open_table(settings, name).to_pyarrow_dataset().count_rows()


def maintain(settings, names: list[str], hours: float, optimize: bool = True, vacuum: bool = True) -> list[dict]:
    """Maintain ``names`` (the missing ones are skipped); one result dict per table."""
    from lakehouse.spark import build_spark

    present = {n: before for n in names if (before := layout(settings, n)) is not None}
    for n in names:
        if n not in present:
            log.info("maintain: %-24s not created yet, skipped", n)
    if not present:
        return []
    spark = build_spark(settings, app_name="opensky-lakehouse maintain", register=False)
    # Runtime SQL settings, set on the session even when it already existed (tests, notebooks).
    # The retention comes from configuration on purpose: Delta's guard against VACUUM below seven
    # days would refuse a shorter configured one. VACUUM lists files with
    # parallelPartitionDiscovery.parallelism tasks, 10,000 by default: minutes of empty tasks per
    # table on a laptop, so both listing settings follow the machine's parallelism.
    listing = str(max(2, spark.sparkContext.defaultParallelism))
    for key, value in (("spark.databricks.delta.retentionDurationCheck.enabled", "false"),
                       ("spark.sql.sources.parallelPartitionDiscovery.parallelism", listing),
                       ("spark.databricks.delta.vacuum.fileListing.parallelism", listing)):
        spark.conf.set(key, value)
    results = []
    for i, (name, before) in enumerate(present.items(), 1):
        started = time.perf_counter()
        result = {"table": name, "before": before}
        try:
            result.update(_maintain_one(spark, settings, name, hours, optimize, vacuum))
            result["after"] = layout(settings, name)
            result["rows"] = read_back(settings, name)
        except Exception as exc:  # noqa: BLE001 - reported per table, the others still maintained
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            result["error"] = first[:500]
        result["seconds"] = round(time.perf_counter() - started, 2)
        results.append(result)
        if "error" in result:
            log.error("maintain: [%d/%d] %-24s failed after %.1f s: %s", i, len(present), name,
                      result["seconds"], result["error"])
        else:
            after = result["after"]
            log.info("maintain: [%d/%d] %-24s files %d -> %d (%.1f -> %.1f MB), removed by vacuum %s, "
                     "v%d, %s rows read back by delta-rs, %.1f s", i, len(present), name, before["files"],
                     after["files"], before["bytes"] / 1e6, after["bytes"] / 1e6,
                     result.get("vacuumed", "-"), after["version"], f"{result['rows']:,}", result["seconds"])
    return results


def _maintain_one(spark, settings, name: str, hours: float, optimize: bool, vacuum: bool) -> dict:
    from delta.tables import DeltaTable

    from lakehouse.catalog import table_path
    from lakehouse.table_setup import migrate_table, retention_hours, table_properties

    path = table_path(settings, name)
    out: dict = {}
    migrated = migrate_table(spark, settings, name)
    if migrated:
        out["migrated"] = migrated
    dt = DeltaTable.forPath(spark, path)
    wanted = table_properties(settings, name)
    current = dt.detail().select("properties").first()["properties"] or {}
    stale = {k: v for k, v in wanted.items() if current.get(k) != v}
    if stale:
        props = ", ".join(f"'{k}' = '{v}'" for k, v in stale.items())
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({props})")
        out["properties_set"] = stale
    if optimize:
        metrics = dt.optimize().executeCompaction().select("metrics.numFilesAdded", "metrics.numFilesRemoved").first()
        out["optimize"] = {"files_added": metrics["numFilesAdded"], "files_removed": metrics["numFilesRemoved"]}
    if vacuum:
        dt.vacuum(float(retention_hours(settings, name, hours)))
        # Delta records what it deleted in its VACUUM END commit; a DRY RUN to count first would
        # list every file of the table a second time.
        end = (dt.history(5).where("operation = 'VACUUM END'").orderBy("version", ascending=False)
               .select("operationMetrics").first())
        out["vacuumed"] = int((end["operationMetrics"] or {}).get("numDeletedFiles", 0)) if end else 0
    return out
