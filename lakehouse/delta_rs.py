"""Lakehouse tables read without Spark, through delta-rs (the ``deltalake`` package): what the
dashboard, training, ``status``, ``maintain`` and the bench use.

``storage_options`` gives delta-rs the same object store settings as Spark's S3A ones;
``delta_uri`` turns Spark's ``s3a://`` paths into delta-rs' ``s3://``; ``open_table`` opens a
catalog table; ``table_info`` says its version, last commit and row count.
"""

from __future__ import annotations

from datetime import datetime, timezone

from lakehouse.catalog import TABLES
from lakehouse.settings import Settings


def storage_options(settings: Settings) -> dict[str, str]:
    """``deltalake`` (delta-rs) storage options for the configured root (empty for local paths).

    The same endpoint, region, addressing style and credentials as Spark's S3A settings
    (``lakehouse.spark.s3_conf``). Without configured keys delta-rs falls back to the AWS
    environment variables and instance role itself.
    """
    if not settings.storage.is_object_store:
        return {}
    st = settings.storage
    opts = {
        "AWS_REGION": st.s3_region,
        # delta-rs names the style the other way round: virtual-hosted = not path-style.
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": str(not st.s3_path_style_access).lower(),
        # Spark writes with S3SingleDriverLogStore; delta-rs here only reads. Should it write
        # (maintenance), the single-writer rule is the same as Spark's (docs/scaling.md).
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    if st.s3_endpoint:
        opts["AWS_ENDPOINT_URL"] = st.s3_endpoint
        opts["AWS_ALLOW_HTTP"] = str(st.s3_endpoint.startswith("http://")).lower()
    if settings.secrets.aws_access_key_id and settings.secrets.aws_secret_access_key:
        opts["AWS_ACCESS_KEY_ID"] = settings.secrets.aws_access_key_id
        opts["AWS_SECRET_ACCESS_KEY"] = settings.secrets.aws_secret_access_key
    return opts


def delta_uri(path: str) -> str:
    """delta-rs speaks ``s3://``; Spark's ``s3a://`` names the same objects (same bucket/key)."""
    return "s3://" + path[len("s3a://"):] if path.startswith("s3a://") else path


def open_table(settings: Settings, name: str):
    """The catalog table ``name`` as a delta-rs ``DeltaTable`` (raises ``TableNotFoundError``)."""
    from deltalake import DeltaTable

    return DeltaTable(delta_uri(TABLES[name].path(settings)), storage_options=storage_options(settings))


def table_info(settings: Settings, name: str) -> dict:
    from deltalake.exceptions import TableNotFoundError

    path = TABLES[name].path(settings)
    try:
        dt = open_table(settings, name)
    except TableNotFoundError:
        return {"table": name, "exists": False, "path": path}
    history = dt.history(1)
    ts = history[0].get("timestamp") if history else None
    actions = dt.get_add_actions(flatten=True)
    rows = actions.column("num_records").to_pylist() if actions.num_rows else []
    return {
        "table": name,
        "exists": True,
        "path": path,
        "version": dt.version(),
        "last_commit": datetime.fromtimestamp(ts / 1000, timezone.utc).isoformat() if ts else None,
        "rows": int(sum(r or 0 for r in rows)),
        "files": actions.num_rows,
    }

