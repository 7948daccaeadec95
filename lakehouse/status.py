"""What the lakehouse holds right now, read without Spark (``lakehouse.delta_rs`` and kafka-python).

Per table: Delta version, last commit time and row count; the bronze job's Kafka lag (end
offsets minus the offsets its checkpoint committed); the silver accounting (every bronze row is
a flight, a quarantined record or a dropped duplicate).
"""

from __future__ import annotations

import json
import os

from lakehouse.catalog import LAYER_CHECKPOINTS, PIPELINE_CHECKPOINT, TABLES, checkpoint_path
from lakehouse.delta_rs import open_table, table_info
from lakehouse.settings import Settings


def _checkpoint_files(settings: Settings, root: str):
    """(list names of a dir, read a text file) under a local or S3 checkpoint root."""
    if "://" not in root:
        def read(path: str) -> str:
            with open(path) as fh:
                return fh.read()
        return os.listdir, read, os.path.join(root, "commits"), os.path.join(root, "offsets")

    from urllib.parse import urlparse

    from pyarrow import fs

    st = settings.storage
    endpoint = urlparse(st.s3_endpoint) if st.s3_endpoint else None
    s3 = fs.S3FileSystem(
        access_key=settings.secrets.aws_access_key_id, secret_key=settings.secrets.aws_secret_access_key,
        region=st.s3_region, scheme=endpoint.scheme if endpoint else None,
        endpoint_override=endpoint.netloc if endpoint else None,
        force_virtual_addressing=not st.s3_path_style_access, connect_timeout=5, request_timeout=10,
    )
    base = root.split("://", 1)[1]

    def listdir(path: str) -> list[str]:
        infos = s3.get_file_info(fs.FileSelector(path, allow_not_found=True))
        return [i.base_name for i in infos]

    def read(path: str) -> str:
        with s3.open_input_stream(path) as fh:
            return fh.read().decode()

    return listdir, read, f"{base}/commits", f"{base}/offsets"


def checkpoint_started(settings: Settings, job: str, query: str) -> bool:
    """Whether the query's checkpoint has planned a micro-batch (local or S3 root)."""
    try:
        listdir, _, _, offsets = _checkpoint_files(settings, checkpoint_path(settings, job, query))
        return any(n.isdigit() for n in listdir(offsets))
    except OSError:  # no such directory; pyarrow raises OSError subclasses for S3 errors too
        return False


def layer_checkpoints(settings: Settings) -> list[str]:
    """The layers whose own jobs have fed this root (their checkpoints exist)."""
    return [layer for layer, (job, query) in LAYER_CHECKPOINTS.items() if checkpoint_started(settings, job, query)]


def pipeline_started(settings: Settings) -> bool:
    """Whether `run all`'s single query has fed this root."""
    return checkpoint_started(settings, *PIPELINE_CHECKPOINT)


def feeding_mode(settings: Settings) -> str:
    """How `run all` feeds this root: ``pipeline`` (one query for every layer) unless the layer
    jobs already feed it (``layers``: their checkpoints exist, the pipeline's does not)."""
    return "layers" if not pipeline_started(settings) and layer_checkpoints(settings) else "pipeline"


def committed_offsets(settings: Settings, job: str = "bronze", query: str = "opensky_states") -> dict[int, int]:
    """Kafka offsets (partition -> next offset) of the last committed batch of a checkpoint.

    The checkpoint may be local or on S3 (read with pyarrow's S3 client and the same settings).
    """
    root = checkpoint_path(settings, job, query)
    try:
        listdir, read, commits, offsets = _checkpoint_files(settings, root)
        done = sorted(int(n) for n in listdir(commits) if n.isdigit())
        if not done:
            return {}
        lines = read(f"{offsets}/{done[-1]}").splitlines()
    except OSError:  # pyarrow raises OSError subclasses for S3 errors too
        return {}
    # Line 1 is the format version, line 2 the batch metadata, then one line per source.
    for line in lines[2:]:
        data = json.loads(line)
        if settings.kafka.topic in data:
            return {int(p): int(o) for p, o in data[settings.kafka.topic].items()}
    return {}


def bronze_lag(settings: Settings) -> dict:
    from kafka.errors import KafkaError

    from lakehouse.kafka_admin import end_offsets

    try:
        ends = end_offsets(settings, settings.kafka.topic)
    except (KafkaError, OSError) as exc:  # a down broker is a status to report, not a crash
        return {"available": False, "error": str(exc).splitlines()[0]}
    # the query that reads Kafka: `run all`'s pipeline, or the bronze job of its own
    done = committed_offsets(settings, *(PIPELINE_CHECKPOINT if pipeline_started(settings) else
                                         LAYER_CHECKPOINTS["bronze"]))
    lag = sum(max(0, end - done.get(p, 0)) for p, end in ends.items())
    return {"available": True, "end_offsets": ends, "committed": done, "lag": lag}


def accounting(settings: Settings) -> dict:
    """bronze rows = silver.flights + silver.quarantine + duplicates dropped (+ not yet read).

    Duplicates come from ``silver._dedup_stats`` (one row per silver batch). ``holds`` compares
    the rows silver has read with what the two tables hold plus the duplicates; a batch killed
    between its writes shows as not holding until the job restarts and replays it.
    """
    from deltalake.exceptions import TableNotFoundError

    rows = {name: (table_info(settings, name).get("rows") or 0)
            for name in ("bronze.opensky_states", "silver.flights", "silver.quarantine")}
    processed = duplicates = late = 0
    try:
        stats = open_table(settings, "silver._dedup_stats").to_pyarrow_table(
            columns=["bronze_rows", "duplicates", "unchecked_late_rows"])
        processed, duplicates, late = (sum(v or 0 for v in stats.column(c).to_pylist())
                                       for c in ("bronze_rows", "duplicates", "unchecked_late_rows"))
    except TableNotFoundError:
        pass
    flights, quarantine = rows["silver.flights"], rows["silver.quarantine"]
    return {
        "bronze_rows": rows["bronze.opensky_states"],
        "processed_rows": processed,
        "flights_rows": flights,
        "quarantine_rows": quarantine,
        "duplicates": duplicates,
        "unchecked_late_rows": late,
        "pending_rows": rows["bronze.opensky_states"] - processed,
        "holds": processed == flights + quarantine + duplicates,
    }


def accounting_lines(acc: dict) -> list[str]:
    verdict = "holds" if acc["holds"] else "DOES NOT HOLD (a silver batch is incomplete: restart the job)"
    return [
        f"accounting: bronze {acc['bronze_rows']:,} = silver.flights {acc['flights_rows']:,} + "
        f"silver.quarantine {acc['quarantine_rows']:,} + duplicates dropped {acc['duplicates']:,} + "
        f"not yet read by silver {acc['pending_rows']:,}: {verdict}",
    ] + ([f"  {acc['unchecked_late_rows']:,} records arrived later than silver.dedup_watermark "
          "(kept unchecked for duplicates)"] if acc["unchecked_late_rows"] else [])


def lakehouse_status(settings: Settings, kafka: bool = True) -> dict:
    acc = accounting(settings)
    return {
        "tables": [table_info(settings, name) for name in TABLES],
        "bronze_kafka": bronze_lag(settings) if kafka else {"available": False},
        "accounting": acc,
        "accounting_lines": accounting_lines(acc),
    }
