"""The one Spark factory: ``build_spark(settings)`` is the only place a session is configured.

It adds the Delta extensions and catalog and the Spark Kafka connector. Connector jars are
resolved from Maven Central once and cached in ``spark.cache_dir`` (Ivy cache), so a second
start needs no network. Jobs receive the session as an argument; nothing imports it as a global.
"""

from __future__ import annotations

import hashlib
import logging
import os
from importlib.metadata import version

from lakehouse.settings import Settings, join_path, resolve_path

log = logging.getLogger(__name__)

SCALA_BINARY = "2.13"
LOG4J_CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")


def spark_packages(settings: Settings) -> list[str]:
    """Maven coordinates of the connectors matching the installed pyspark and delta-spark."""
    spark_version = version("pyspark")
    packages = [
        f"io.delta:delta-spark_{SCALA_BINARY}:{version('delta-spark')}",
        f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{spark_version}",
    ]
    packages += [p.strip() for p in settings.spark.extra_packages.split(",") if p.strip()]
    return packages


def spark_conf(settings: Settings) -> dict[str, str]:
    """Every Spark setting the lakehouse needs, as plain key/value pairs (also for spark-submit)."""
    cache = resolve_path(settings.spark.cache_dir)
    conf = {
        "spark.master": settings.spark.master,
        "spark.app.name": settings.spark.app_name,
        **_jar_conf(settings, cache),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        # Database directories of the table names live under the lakehouse root, not the cwd.
        "spark.sql.warehouse.dir": join_path(settings.storage.root, "_catalog"),
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.ui.enabled": str(settings.spark.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{LOG4J_CONF}",
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        # Delta writes its own checkpoints; keep the log short and the tables readable by delta-rs.
        "spark.databricks.delta.properties.defaults.checkpointInterval": "10",
        "spark.databricks.delta.retentionDurationCheck.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Spark 4.1.1's Kafka V2 micro-batch stream throws a NullPointerException when a restart
        # replays a planned-but-uncommitted batch (SPARK-55271/SPARK-57438, fixed upstream
        # after 4.1.1): a job killed mid-batch could then never restart. The V1 Kafka source
        # has the same offsets, exactly-once and availableNow semantics without that path.
        "spark.sql.streaming.disabledV2MicroBatchReaders": "org.apache.spark.sql.kafka010.KafkaSourceProvider",
        # The driver binds to loopback unless a cluster master needs it reachable.
        "spark.driver.bindAddress": "127.0.0.1" if settings.spark.master.startswith("local") else "0.0.0.0",
        "spark.driver.host": "127.0.0.1" if settings.spark.master.startswith("local") else _host_for_cluster(),
    }
    return conf


def _jars_manifest(settings: Settings, cache: str) -> str:
    key = hashlib.sha1(",".join(spark_packages(settings)).encode()).hexdigest()[:12]
    return os.path.join(cache, f"spark-jars-{key}.txt")


def _jar_conf(settings: Settings, cache: str) -> dict[str, str]:
    """``spark.jars`` from the local cache once resolved (no network), else Maven packages.

    The first start resolves ``spark.jars.packages`` through Ivy into ``<cache>/ivy``;
    :func:`build_spark` then records the resolved jar files in a manifest keyed by the package
    list. Later starts pass those files directly, so they neither need nor try the network.
    """
    manifest = _jars_manifest(settings, cache)
    try:
        jars = [line for line in open(manifest).read().split() if line]
    except OSError:
        jars = []
    if jars and all(os.path.isfile(j) for j in jars):
        return {"spark.jars": ",".join(jars)}
    return {"spark.jars.packages": ",".join(spark_packages(settings)), "spark.jars.ivy": os.path.join(cache, "ivy")}


def _record_jars(spark, settings: Settings) -> None:
    cache = resolve_path(settings.spark.cache_dir)
    manifest = _jars_manifest(settings, cache)
    if os.path.isfile(manifest):
        return
    jars = [j.removeprefix("file://").removeprefix("file:") for j in spark.conf.get("spark.jars", "").split(",") if j]
    if jars and all(os.path.isfile(j) for j in jars):
        os.makedirs(cache, exist_ok=True)
        with open(manifest + ".tmp", "w") as fh:
            fh.write("\n".join(jars) + "\n")
        os.replace(manifest + ".tmp", manifest)


def _host_for_cluster() -> str:
    return os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")


def build_spark(
    settings: Settings,
    app_name: str | None = None,
    extra_conf: dict[str, str] | None = None,
    register: bool = True,
):
    """Create (or return the running) SparkSession configured for the lakehouse.

    With ``register`` every existing table is reachable by name (``silver.flights``).
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", _python())
    if settings.spark.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # never bind a public interface
    builder = SparkSession.builder
    conf = spark_conf(settings)
    if app_name:
        conf["spark.app.name"] = app_name
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    _record_jars(spark, settings)
    if register:
        from lakehouse.tables import register_tables

        register_tables(spark, settings)
    return spark


def _python() -> str:
    import sys

    return sys.executable
