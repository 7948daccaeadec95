"""The one Spark factory: ``build_spark(settings)`` is the only place a session is configured.

It adds the Delta extensions and catalog and the Spark Kafka connector. Connector jars are
resolved from Maven Central once and cached in ``spark.cache_dir`` (Ivy cache), so a second
start needs no network. Jobs receive the session as an argument; nothing imports it as a global.

Scale out by configuration alone: an ``s3a://bucket/prefix`` root adds hadoop-aws (the version
of the Hadoop inside pyspark, which pulls the matching AWS SDK bundle) and the S3A/Delta log
store settings; a non-local ``spark.master`` (``spark://host:7077``) ships the project's Python
packages to the executors as one zip (:func:`code_archive`).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

from lakehouse.jvm import java_executable
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
    if needs_s3(settings):
        # hadoop-aws must match the Hadoop client inside pyspark exactly; its POM pins the
        # AWS SDK v2 bundle it was built against, so Ivy pulls the right one.
        packages.append(f"org.apache.hadoop:hadoop-aws:{hadoop_version()}")
    packages += [p.strip() for p in settings.spark.extra_packages.split(",") if p.strip()]
    return list(dict.fromkeys(packages))


S3_SCHEMES = ("s3a://", "s3://")


def needs_s3(settings: Settings) -> bool:
    """True when the lakehouse root lives on S3 or an S3-compatible store (MinIO, Ceph, ...)."""
    return settings.storage.root.startswith(S3_SCHEMES)


def hadoop_client_jars() -> list[str]:
    """The ``hadoop-client-api-<v>.jar`` files inside pyspark."""
    import pyspark

    return glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "hadoop-client-api-*.jar"))


def hadoop_version() -> str:
    """Version of the Hadoop client bundled with pyspark (from ``hadoop-client-api-<v>.jar``)."""
    jars = hadoop_client_jars()
    found = sorted(m.group(1) for j in jars if (m := re.search(r"hadoop-client-api-(\d[\w.-]*)\.jar$", j)))
    if not found:
        raise RuntimeError("no hadoop-client-api-*.jar in pyspark/jars: cannot pick the hadoop-aws version")
    return found[-1]


def s3_conf(settings: Settings) -> dict[str, str]:
    """S3A and Delta log store settings for an object-store root (no secrets: see build_spark)."""
    st = settings.storage
    conf = {
        # s3:// roots go through the same S3A client (Hadoop has no other S3 filesystem).
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint.region": st.s3_region,
        "spark.hadoop.fs.s3a.path.style.access": str(st.s3_path_style_access).lower(),
        # Delta's documented single-cluster log store for S3: all writers of a table must go
        # through one driver (one `run` process per layer, as here). Concurrent writers from
        # several clusters need S3DynamoDBLogStore (docs/scaling.md).
        "spark.delta.logStore.s3a.impl": "io.delta.storage.S3SingleDriverLogStore",
        "spark.delta.logStore.s3.impl": "io.delta.storage.S3SingleDriverLogStore",
    }
    if st.s3_endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = st.s3_endpoint
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(st.s3_endpoint.startswith("https://")).lower()
    return conf


def s3_credentials_conf(settings: Settings) -> dict[str, str]:
    """Static credentials from the environment / .env (``settings.secrets``), if any.

    Kept out of :func:`spark_conf` so ``spark-conf`` never prints them; Spark redacts
    ``*.access.key``/``*secret*`` in its UI and event logs. Without them S3A falls back to its
    default chain (environment variables, then the instance role).
    """
    secrets = settings.secrets
    if not (needs_s3(settings) and secrets.aws_access_key_id and secrets.aws_secret_access_key):
        return {}
    return {
        "spark.hadoop.fs.s3a.access.key": secrets.aws_access_key_id,
        "spark.hadoop.fs.s3a.secret.key": secrets.aws_secret_access_key,
    }


def write_whole(path: str, write: Callable[[str], object]) -> None:
    """Create ``path`` whole or not at all: ``write(name)`` writes it under a name of this
    process's own, renamed to ``path`` once it returns (removed if it raises). Several processes
    may build the same cache file at once; none ever reads another's half-written file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_MB = {"": 1 / 2**20, "k": 1 / 2**10, "m": 1, "g": 2**10, "t": 2**20}


def heap_region_mb(heap: str) -> int | None:
    """G1's region size for a heap of ``heap`` (a JVM/Spark size: ``2g``, ``1536m``): about 128
    regions, a power of two from 1 to 32 MB; None for a size that is not one.

    The JVM's own choice is about 2,048 regions: 1 MB for 2 GB, so that every array of 512 KB or
    more is "humongous", allocated straight into the old generation, and each such allocation can
    start a concurrent marking cycle. A micro-batch allocates them all the time (a cached column of
    10,000 Kafka values is ~3.5 MB; Parquet pages, Kafka fetches): at 10,000 states/s `run all`
    went through a marking cycle every 2.7 s, 121 of 136 started by a humongous allocation, and
    G1's marking thread took ~0.2 of the 2 cores. With 16 MB regions (2 GB) such arrays are young
    objects that die young (docs/scaling.md)."""
    match = _SIZE.match(heap)
    if not match:
        return None
    mb = int(match.group(1)) * _MB[match.group(2).lower()]
    region = 1
    while region < 32 and region * 2 * 128 <= mb:
        region *= 2
    return region


# G1 starts a concurrent marking cycle when the old generation passes this share of the heap, not
# at its own adaptive guess. The old generation of `run all` holds a micro-batch's caches (~1 GB of
# a 2 GB heap at 10,000 states/s, dead at the batch's end); the adaptive threshold sat below that,
# so G1 marked the heap all the time: 146 cycles in a 330 s run, ~82 s of marking, ~0.25 of the 2
# cores (-Xlog:gc). With 75 %: 22 cycles, ~23 s, no full collection (docs/scaling.md).
G1_MARKING = ("-XX:-G1UseAdaptiveIHOP", "-XX:InitiatingHeapOccupancyPercent=75")

# JDK 17-21: an allocation that finds threads in JNI critical sections (Snappy and zstd working
# on byte arrays) waits for them and a collection at most twice, then fails with OutOfMemoryError
# although the heap has room ("Retried waiting for GCLocker too often", JDK-8192647). It stopped
# the full bench's `run all` on a million states once, in its bronze write. A hundred retries
# instead; JDK 22 and later pin regions for JNI (JEP 423) and retire the option.
GCLOCKER_RETRIES = ("-XX:+UnlockDiagnosticVMOptions", "-XX:GCLockerRetryAllocationCount=100")
_JAVA_VERSION = re.compile(r'^JAVA_VERSION="(?:1\.)?(\d+)', re.M)


@functools.cache
def java_major_version() -> int | None:
    """The major version of the JDK Spark starts (:func:`lakehouse.jvm.java_executable`), read
    from the JDK's ``release`` file; None when unknown."""
    java = java_executable()
    home = os.path.dirname(os.path.dirname(os.path.realpath(java))) if java else None
    try:
        match = _JAVA_VERSION.search(Path(home, "release").read_text()) if home else None
    except OSError:
        return None
    return int(match.group(1)) if match else None


def gclocker_options() -> tuple[str, ...]:
    """:data:`GCLOCKER_RETRIES` for a JDK that has the option (17-21), else nothing."""
    major = java_major_version()
    return GCLOCKER_RETRIES if major is not None and major < 22 else ()


def java_options(settings: Settings, cache: str) -> str:
    """The driver JVM's options: the log configuration, G1's region size for the heap
    (:func:`heap_region_mb`), marking threshold (:data:`G1_MARKING`) and allocation retries
    (:func:`gclocker_options`), then
    ``spark.java_options`` (later options win).

    Several options are one option naming a file that holds them (``-XX:VMOptionsFile``, in
    ``cache``, named by its content): ``spark-submit $(opensky-lakehouse spark-conf)`` splits the
    printed words on whitespace, so the value must be one word."""
    region = heap_region_mb(settings.spark.driver_memory)
    g1 = f"-XX:G1HeapRegionSize={region}m" if region else ""
    options = " ".join(o for o in (f"-Dlog4j2.configurationFile=file:{LOG4J_CONF}", g1, *G1_MARKING,
                                   *gclocker_options(), settings.spark.java_options.strip()) if o)
    if not any(c.isspace() for c in options):
        return options
    text = options + "\n"
    path = os.path.join(cache, f"jvm-{hashlib.sha256(text.encode()).hexdigest()[:12]}.options")
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        write_whole(path, lambda out: Path(out).write_text(text))
    return f"-XX:VMOptionsFile={path}"


def user_conf(settings: Settings) -> dict[str, str]:
    """``spark.extra_conf`` ("spark.a=1, spark.b=x,y") as a dict; a value may contain commas."""
    text = settings.spark.extra_conf.strip()
    if not text:
        return {}
    conf = {}
    for item in re.split(r",\s*(?=spark\.)", text):
        key, _, value = item.partition("=")
        conf[key.strip()] = value.strip()
    return conf


def is_local_master(settings: Settings) -> bool:
    return settings.spark.master.startswith("local")


PY_PACKAGES = ("lakehouse", "ingestion", "ml", "dashboard")


def code_archive(settings: Settings) -> str:
    """Zip of the project's Python packages for the executors; named by content, built once.

    Executors of a cluster need the code that pandas UDFs and Python functions refer to
    (``ml``'s scorer, the transforms). The zip is shipped with ``SparkContext.addPyFile`` and goes
    first on the executors' ``sys.path``, so a stale install on the workers cannot shadow it.
    """
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = []
    for package in PY_PACKAGES:
        base = os.path.join(repo, package)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    digest = hashlib.sha1()
    for path in files:
        digest.update(os.path.relpath(path, repo).encode())
        with open(path, "rb") as fh:
            digest.update(fh.read())
    out_dir = os.path.join(resolve_path(settings.spark.cache_dir), "pyfiles")
    target = os.path.join(out_dir, f"opensky-lakehouse-{digest.hexdigest()[:12]}.zip")
    def write(out: str) -> None:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, os.path.relpath(path, repo))

    if not os.path.isfile(target):
        os.makedirs(out_dir, exist_ok=True)
        write_whole(target, write)
    return target


# glibc's malloc arenas of the Spark JVM (MALLOC_ARENA_MAX; glibc's default is 8 per core): the
# JVM's own allocations, Netty's, the codecs', spread over up to 16 arenas on 2 cores, each keeping
# its freed memory. With 2: `run all`'s JVM RSS 2,234 -> 2,154 MB at 1,000 states/s and
# 2,251 -> 2,203 MB at 10,000, the same time a row (docs/scaling.md "run all in 2.5 GB"). An
# environment that sets MALLOC_ARENA_MAX keeps its own.
MALLOC_ARENAS = "2"
# Generated classes kept by Spark (spark.sql.codegen.cache.maxEntries; Spark's default is 100).
CODEGEN_CACHE_ENTRIES = 500
# What spark.codegen off turns off (spark_conf) and what compiled_expressions turns back on.
_EXPRESSION_CODEGEN = {"spark.sql.codegen.factoryMode": ("NO_CODEGEN", "FALLBACK"),
                       "spark.sql.subexpressionElimination.enabled": ("false", "true")}


@contextmanager
def compiled_expressions(spark) -> Iterator[None]:
    """Run the Spark actions inside with their expressions compiled (``factoryMode=FALLBACK``,
    subexpressions shared in the generated code), when ``spark.codegen`` is off for the rest.

    For the steps of a micro-batch whose expressions are the same every batch (no literal that
    changes from one trigger to the next): their classes are compiled on the first batch and found
    in Spark's code cache afterwards, so each row is evaluated by generated code without a
    compilation per trigger. Results are the same either way; the session's setting is put back
    after (another query sharing the session in between runs compiled too, no more)."""
    if spark.conf.get("spark.sql.codegen.factoryMode", None) != _EXPRESSION_CODEGEN["spark.sql.codegen.factoryMode"][0]:
        yield
        return
    with session_conf(spark, {key: on for key, (_, on) in _EXPRESSION_CODEGEN.items()}):
        yield


@contextmanager
def session_conf(spark, values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` on the session for the block, then put back what was there (unset stays
    unset)."""
    conf = spark.conf
    before = {key: conf.get(key, None) for key in values}
    for key, value in values.items():
        conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                conf.unset(key)
            else:
                conf.set(key, value)


# What merged_partitions sets: adaptive execution merges a shuffle's partitions towards its
# advisory size (64 MB) rather than towards one per core, in a persisted plan too (by default a
# cached plan keeps every shuffle partition).
_MERGED_PARTITIONS = {"spark.sql.adaptive.coalescePartitions.parallelismFirst": "false",
                      "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true"}


@contextmanager
def merged_partitions(spark) -> Iterator[None]:
    """Plan and run the block's persisted steps with their shuffles merged towards 64 MB a
    partition: a micro-batch of up to ~100,000 states is one task after each shuffle.

    For gold's scoring step: each concurrent task of a pandas UDF has its own Python worker
    (~150-200 MB of pandas, pyarrow and scikit-learn, kept for the next batch), and with one
    partition per core `run all` kept two. A batch of a million states still splits. Applied to
    every shuffle of `run all` it made the deduplication of a million states one task (the
    pipeline 32 -> 37 s), so it is scoped (docs/scaling.md "run all in 2.5 GB")."""
    with session_conf(spark, _MERGED_PARTITIONS):
        yield


def spark_conf(settings: Settings) -> dict[str, str]:
    """Every Spark setting the lakehouse needs, as plain key/value pairs (also for spark-submit)."""
    cache = resolve_path(settings.spark.cache_dir)
    conf = {
        "spark.master": settings.spark.master,
        "spark.app.name": settings.spark.app_name,
        **_jar_conf(settings, cache),
        **_local_fs_conf(settings, cache),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        # Delta rebuilds a table's state (its list of files) in 50 tasks unless told: 50 tiny
        # tasks per table per batch, each a round trip to an executor on a cluster. The files
        # of a table are as many tasks' worth as the shuffle of a batch, so use that number.
        "spark.databricks.delta.snapshotPartitions": str(settings.spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        # Database directories of the table names live under the lakehouse root, not the cwd.
        "spark.sql.warehouse.dir": join_path(settings.storage.root, "_catalog"),
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.ui.enabled": str(settings.spark.ui_enabled).lower(),
        # spark.codegen (conf/default.yaml): off, no per-trigger compilation of generated code.
        "spark.sql.codegen.wholeStage": str(settings.spark.codegen).lower(),
        "spark.sql.codegen.factoryMode": "FALLBACK" if settings.spark.codegen else "NO_CODEGEN",
        # Spark's cache of generated classes (100 by default): a `run all` trigger compiles ~100
        # classes on its first batch (the steps that run compiled, Delta's own jobs), so every
        # batch that plans a few new ones (gold._state rewritten every 20th generation, a window
        # closing) evicted others, and the next batch compiled ~30 classes again (+4 s at
        # 10,000 states/s, docs/scaling.md). A few MB of metaspace more.
        "spark.sql.codegen.cache.maxEntries": str(CODEGEN_CACHE_ENTRIES),
        # Interpreted, common subexpressions are shared through a Guava cache cleared for every
        # row: 13 % of the executors' samples of a `run all` batch of 200,000 rows, most of it in
        # Delta's per-file statistics of each write and in hash aggregates, where no expensive
        # subexpression is shared. Off with codegen off: a write of 200,000 rows 0.18-0.25 s
        # faster, a trigger ~5 % (docs/scaling.md). Generated code shares them without the cache.
        "spark.sql.subexpressionElimination.enabled": str(settings.spark.codegen).lower(),
        # A micro-batch's caches live for one trigger: encoding their columns (statistics of
        # every column of every 10,000-row batch to pick run-length, dictionary or delta) cost
        # more than it saved. The bytes are mostly the Kafka value (binary, never encoded) and
        # the parsed record (a struct, never encoded): a 200,000-state trigger 15.0 -> 13.9 s.
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
        "spark.ui.showConsoleProgress": "false",
        # PySpark's call-site capture: every Column built records its Python stack in the JVM
        # (~10 more calls into the JVM per Column; a micro-batch plans a few hundred): 0.2-0.3 s
        # of each trigger's planning (docs/scaling.md). Errors keep their message and plan;
        # only the "== DataFrame ==" Python line of a runtime error is gone. A notebook that
        # wants it back: spark.extra_conf.
        "spark.python.sql.dataFrameDebugging.enabled": "false",
        "spark.driver.extraJavaOptions": java_options(settings, cache),
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
        "spark.driver.bindAddress": "127.0.0.1" if settings.spark.master.startswith("local") else _bind_for_cluster(),
        "spark.driver.host": "127.0.0.1" if settings.spark.master.startswith("local") else _host_for_cluster(),
    }
    if needs_s3(settings):
        conf.update(s3_conf(settings))
    conf.update(user_conf(settings))
    return conf


JAVA_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "java")
FS_CLASSES = {
    "spark.hadoop.fs.file.impl": "org.opensky.lakehouse.fs.NoForkLocalFileSystem",
    "spark.hadoop.fs.AbstractFileSystem.file.impl": "org.opensky.lakehouse.fs.NoForkLocalFs",
}


def local_fs_jar(cache: str) -> str | None:
    """The jar of ``lakehouse/java``, compiled once per source digest into ``cache`` with the
    JDK's ``javac``; None when there is no JDK. Two things in it:

    - the local file system without child processes: without Hadoop's native library (pip's
      pyspark ships none) Hadoop's local file system runs ``chmod`` for every file it creates and
      ``readlink`` for every rename through FileContext (each Delta commit, each streaming
      checkpoint file): ~150 child processes of the Spark JVM per ``run all`` trigger. The
      classes do both in Java and leave the rest to Hadoop (``spark.fast_local_fs``);
    - silver's parser of plain records (``org.opensky.lakehouse.json.RecordParser``, see
      ``lakehouse.transforms.silver.plain_record_parser``).
    """
    sources = sorted(glob.glob(os.path.join(JAVA_SRC, "**", "*.java"), recursive=True))
    digest = hashlib.sha1()
    for path in sources:
        digest.update(open(path, "rb").read())
    target = os.path.join(cache, f"opensky-lakehouse-fs-{digest.hexdigest()[:12]}.jar")
    if os.path.isfile(target):
        return target
    javac, jar = shutil.which("javac"), shutil.which("jar")
    if not sources or not javac or not jar:
        log.info("no JDK (javac, jar) on PATH: Hadoop's local file system forks chmod/readlink per file")
        return None
    import pyspark

    spark_jars = os.path.join(os.path.dirname(pyspark.__file__), "jars", "*")  # Spark's API, Hadoop's
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as classes:
        try:
            subprocess.run([javac, "--release", "17", "-nowarn", "-cp", spark_jars, "-d", classes,
                            *sources], capture_output=True, text=True, check=True)
            write_whole(target, lambda out: subprocess.run([jar, "cf", out, "-C", classes, "."], capture_output=True,
                                                           text=True, check=True))
        except subprocess.CalledProcessError as exc:
            log.warning("could not compile %s (Hadoop's local file system and from_json for every record stay): %s",
                        JAVA_SRC,
                        (exc.stderr or exc.stdout or "").strip()[-500:])
            return None
    return target


def _local_fs_conf(settings: Settings, cache: str) -> dict[str, str]:
    """The project's jar (:func:`local_fs_jar`) for a local master (one JVM: the driver's class
    path is the executors'), with the no-fork local file system unless ``spark.fast_local_fs`` is
    off; nothing for a cluster or when it cannot be built."""
    if not is_local_master(settings):
        return {}
    jar = local_fs_jar(cache)
    if jar is None:
        return {}
    return {"spark.driver.extraClassPath": jar, **(FS_CLASSES if settings.spark.fast_local_fs else {})}


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
        write_whole(manifest, lambda out: Path(out).write_text("\n".join(jars) + "\n"))


def _host_for_cluster() -> str:
    """Address executors use to reach the driver: ``SPARK_LOCAL_IP`` (set it on a real cluster)."""
    return os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")


def _bind_for_cluster() -> str:
    """Executors must reach the driver: all interfaces unless ``SPARK_LOCAL_IP`` pins one."""
    return os.environ.get("SPARK_LOCAL_IP", "0.0.0.0")


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
    # The JVM started below (and the Python workers it starts) inherit it; see MALLOC_ARENAS.
    os.environ.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENAS)
    if settings.spark.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # never bind a public interface
    builder = SparkSession.builder
    conf = spark_conf(settings)
    if app_name:
        conf["spark.app.name"] = app_name
    conf.update(s3_credentials_conf(settings))
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    _record_jars(spark, settings)
    if not is_local_master(settings):
        archive = code_archive(settings)
        if os.path.basename(archive) not in spark.sparkContext._python_includes:
            spark.sparkContext.addPyFile(archive)
    if register:
        from lakehouse.table_setup import register_tables

        register_tables(spark, settings)
    return spark


def _python() -> str:
    import sys

    return sys.executable
