"""Scale out by configuration alone: the same jobs on a Spark standalone cluster and on S3.

The cluster (one master, one worker with 1 core and 1g, from pyspark's jars) and the S3 server
(moto) are real processes on 127.0.0.1, started once for this module and always stopped. The
layer jobs run there as the user runs them, ``python -m lakehouse run bronze --once`` and then
``run all --once`` (bronze, silver, gold one after the other) with ``spark.master=spark://...``
and an ``s3a://`` root; every public table must hold exactly the rows of a local run of the same
records, and delta-rs (status, the dashboard's reader) must read them from S3. The test prints
each layer's rows/s on the cluster against local mode (docs/scaling.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from lakehouse.delta_rs import delta_uri, storage_options, table_info
from lakehouse.local.cluster import S3Server, StandaloneCluster, spark_home
from lakehouse.settings import load_settings
from lakehouse.spark import (
    G1_MARKING,
    code_archive,
    gclocker_options,
    hadoop_version,
    heap_region_mb,
    java_major_version,
    s3_credentials_conf,
    spark_conf,
    spark_packages,
    write_whole,
)
from tests.helpers import REPO, cli_env, produce, run_cli

BRONZE_KEY_COLUMNS = ["key", "value", "topic", "partition", "offset", "kafka_timestamp"]


def _settings(**env):
    return load_settings(profile="test", env=env, dotenv=None)


# --- configuration: what an s3a:// root and a cluster master add, and what they do not ---------


def test_local_root_fetches_no_s3_jars_and_sets_no_s3a():
    settings = _settings()
    assert not any("hadoop-aws" in p for p in spark_packages(settings))
    assert not any(k.startswith("spark.hadoop.fs.s3") for k in spark_conf(settings))


def test_s3a_root_adds_hadoop_aws_matching_pyspark_and_the_s3_settings():
    jars = os.listdir(os.path.join(spark_home(), "jars"))
    bundled = next(j for j in jars if j.startswith("hadoop-client-api-"))
    settings = _settings(OPENSKY_LAKEHOUSE_STORAGE__ROOT="s3a://bucket/lake",
                         OPENSKY_LAKEHOUSE_STORAGE__S3_ENDPOINT="http://127.0.0.1:9000",
                         OPENSKY_LAKEHOUSE_STORAGE__S3_REGION="eu-west-3")
    assert f"org.apache.hadoop:hadoop-aws:{hadoop_version()}" in spark_packages(settings)
    assert bundled == f"hadoop-client-api-{hadoop_version()}.jar"
    conf = spark_conf(settings)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-3"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.delta.logStore.s3a.impl"] == "io.delta.storage.S3SingleDriverLogStore"
    assert conf["spark.sql.warehouse.dir"] == "s3a://bucket/lake/_catalog"


def test_credentials_reach_spark_and_delta_rs_but_never_the_printed_conf():
    env = {"OPENSKY_LAKEHOUSE_STORAGE__ROOT": "s3a://bucket/lake",
           "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}
    settings = _settings(**env)
    assert s3_credentials_conf(settings) == {"spark.hadoop.fs.s3a.access.key": "AKIAEXAMPLEKEY",
                                             "spark.hadoop.fs.s3a.secret.key": "s3cr3t-value"}
    assert storage_options(settings)["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-value"
    printed = run_cli(settings, "spark-conf", "--lines", **env).stdout
    assert "hadoop-aws" in printed or "hadoop_hadoop-aws" in printed
    assert "s3cr3t-value" not in printed and "AKIAEXAMPLEKEY" not in printed
    assert "s3cr3t" not in repr(settings)


def test_storage_options_mirror_the_s3a_settings():
    settings = _settings(OPENSKY_LAKEHOUSE_STORAGE__ROOT="s3a://bucket/lake",
                         OPENSKY_LAKEHOUSE_STORAGE__S3_ENDPOINT="https://minio.internal:9000",
                         OPENSKY_LAKEHOUSE_STORAGE__S3_PATH_STYLE_ACCESS="false")
    opts = storage_options(settings)
    assert opts["AWS_ENDPOINT_URL"] == "https://minio.internal:9000"
    assert opts["AWS_ALLOW_HTTP"] == "false"
    assert opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] == "true"
    assert "AWS_ACCESS_KEY_ID" not in opts  # none configured: delta-rs uses its own chain
    assert storage_options(_settings()) == {}
    assert delta_uri("s3a://bucket/lake/bronze/opensky_states") == "s3://bucket/lake/bronze/opensky_states"


def test_java_options_follow_the_log_configuration_in_one_word_and_reach_the_jvm(tmp_path):
    value = spark_conf(_settings(OPENSKY_LAKEHOUSE_SPARK__JAVA_OPTIONS="-XX:+UseSerialGC -Dx=1",
                                 OPENSKY_LAKEHOUSE_SPARK__CACHE_DIR=str(tmp_path)))["spark.driver.extraJavaOptions"]
    assert value.startswith(f"-XX:VMOptionsFile={tmp_path}/jvm-") and value.split() == [value]
    options = open(value.split("=", 1)[1]).read().split()
    assert options[0].startswith("-Dlog4j2.configurationFile=file:")
    assert options[1:] == ["-XX:G1HeapRegionSize=16m", *G1_MARKING, *gclocker_options(), "-XX:+UseSerialGC",
                           "-Dx=1"]  # 2g (conf/test.yaml)
    # A real JVM reads the file: the collector it names is the one it runs.
    flags = subprocess.run(["java", value, "-XX:+PrintFlagsFinal", "-version"], capture_output=True, text=True,
                           check=True).stdout
    assert re.search(r"\bUseSerialGC\s+= true", flags)
    # The default: G1 with regions of about 1/128 of the heap, and a user's own size wins (the last one given).
    for heap, user, region_mb in (("2g", "", 16), ("1g", "", 8), ("8g", "", 32), ("2g", "-XX:G1HeapRegionSize=2m", 2)):
        value = spark_conf(_settings(OPENSKY_LAKEHOUSE_SPARK__DRIVER_MEMORY=heap, OPENSKY_LAKEHOUSE_SPARK__JAVA_OPTIONS=user,
                                     OPENSKY_LAKEHOUSE_SPARK__CACHE_DIR=str(tmp_path)))["spark.driver.extraJavaOptions"]
        flags = subprocess.run(["java", value, f"-Xmx{heap}", "-XX:+PrintFlagsFinal", "-version"], capture_output=True,
                               text=True, check=True).stdout
        assert re.search(r"\bUseG1GC\s+= true", flags)
        assert re.search(rf"\bG1HeapRegionSize\s+= {region_mb * 2**20}\b", flags), (heap, user)
        # Marking starts at a fixed three quarters of the heap, not at G1's adaptive guess.
        assert re.search(r"\bG1UseAdaptiveIHOP\s+= false", flags) and re.search(r"\bInitiatingHeapOccupancyPercent\s+= 75\b", flags)
        # On JDK 17-21, an allocation held up by JNI critical sections is retried a hundred times.
        assert java_major_version() is not None
        if java_major_version() < 22:
            assert re.search(r"\bGCLockerRetryAllocationCount\s+= 100\b", flags)
    # A user's own threshold wins as well.
    value = spark_conf(_settings(OPENSKY_LAKEHOUSE_SPARK__JAVA_OPTIONS="-XX:+G1UseAdaptiveIHOP -XX:InitiatingHeapOccupancyPercent=45",
                                 OPENSKY_LAKEHOUSE_SPARK__CACHE_DIR=str(tmp_path)))["spark.driver.extraJavaOptions"]
    flags = subprocess.run(["java", value, "-XX:+PrintFlagsFinal", "-version"], capture_output=True, text=True,
                           check=True).stdout
    assert re.search(r"\bG1UseAdaptiveIHOP\s+= true", flags) and re.search(r"\bInitiatingHeapOccupancyPercent\s+= 45\b", flags)


def test_heap_region_size_follows_the_heap():
    assert [heap_region_mb(h) for h in ("2g", "2048m", "2GB", "1536m", "1g", "512m", "100m", "4g", "64g")] == [
        16, 16, 16, 8, 8, 4, 1, 32, 32]
    assert heap_region_mb("lots") is None  # not a size: the JVM's own choice


def test_extra_conf_passes_through_and_a_malformed_one_is_a_one_line_error():
    settings = _settings(OPENSKY_LAKEHOUSE_SPARK__EXTRA_CONF=(
        "spark.executor.memory=4g, spark.executor.extraJavaOptions=-Da=1,-Db=2"))
    conf = spark_conf(settings)
    assert conf["spark.executor.memory"] == "4g"
    assert conf["spark.executor.extraJavaOptions"] == "-Da=1,-Db=2"
    bad = run_cli(settings, "spark-conf", check=False, OPENSKY_LAKEHOUSE_SPARK__EXTRA_CONF="executor.memory=4g")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("opensky-lakehouse: configuration error: spark.extra_conf")


def test_code_archive_holds_the_project_packages_and_is_rebuilt_only_on_change(tmp_path):
    settings = _settings().replace(spark={"cache_dir": str(tmp_path)})
    archive = code_archive(settings)
    assert code_archive(settings) == archive
    names = zipfile.ZipFile(archive).namelist()
    assert "lakehouse/jobs/bronze.py" in names and "lakehouse/transforms/bronze.py" in names
    assert not any("__pycache__" in n for n in names)
    assert sorted(os.listdir(tmp_path / "pyfiles")) == [os.path.basename(archive)]  # no temporary left


def test_cache_files_appear_whole_or_not_at_all(tmp_path):
    target = tmp_path / "cache.txt"

    def half(out):
        Path(out).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_whole(str(target), half)
    assert os.listdir(tmp_path) == []
    write_whole(str(target), lambda out: Path(out).write_text("whole"))
    assert target.read_text() == "whole" and os.listdir(tmp_path) == ["cache.txt"]


# --- for real: a standalone cluster and an S3 server -------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    try:
        with StandaloneCluster(work, cores=1, memory="1g") as running:
            yield running
    finally:
        # Each application's dir holds a copy of the shipped jars (the AWS SDK bundle is large).
        shutil.rmtree(work, ignore_errors=True)


def _on_cluster(settings, cluster, s3, prefix: str):
    return settings.replace(
        spark={"master": cluster.url},
        storage={"root": s3.root(prefix), "s3_endpoint": s3.endpoint, "s3_path_style_access": True},
    )


def _cluster_env(s3) -> dict[str, str]:
    # Credentials as users give them (environment); the driver binds to loopback in tests.
    return {**s3.credentials, "SPARK_LOCAL_IP": "127.0.0.1"}


def _with_secrets(settings, s3):
    return settings.replace(secrets={"aws_access_key_id": s3.credentials["AWS_ACCESS_KEY_ID"],
                                     "aws_secret_access_key": s3.credentials["AWS_SECRET_ACCESS_KEY"]})


def _read(settings, name: str, columns: list[str]):
    """A table as a sorted pandas frame, read with delta-rs (local path or S3)."""
    from deltalake import DeltaTable

    from lakehouse.catalog import table_path

    dt = DeltaTable(delta_uri(table_path(settings, name)), storage_options=storage_options(settings))
    return dt.to_pandas(columns=columns).sort_values(columns).reset_index(drop=True)


def _app_on_master(cluster, name: str) -> dict:
    apps = cluster.state().get("completedapps", [])
    return next((a for a in reversed(apps) if a.get("name") == name), {})


def _cluster_rate(stderr: str, layer: str) -> tuple[int, float]:
    """Rows and batch seconds of one layer in a ``run ... --once`` log (its progress lines)."""
    rows, seconds = 0, 0.0
    for m in re.finditer(rf"{layer} batch \d+: (\d+) rows, [\d,]+ rows/s, ([\d.]+) s", stderr):
        rows, seconds = rows + int(m.group(1)), seconds + float(m.group(2))
    return rows, seconds


def _local_rate(queries) -> tuple[int, float]:
    """Rows and batch seconds of in-process queries, from the same progress Spark logs."""
    batches = [p for q in queries for p in q.recentProgress if p.numInputRows]
    return sum(p.numInputRows for p in batches), sum(p.batchDuration for p in batches) / 1000


def _run_local(spark, settings, layer: str) -> tuple[int, float]:
    from lakehouse.jobs.layers import job_module
    from lakehouse.jobs.streams import await_queries

    queries = job_module(layer).start(spark, settings, once=True)
    await_queries(queries)
    return _local_rate(queries)


FIXTURE = REPO / "tests" / "fixtures" / "quickstart_excerpt.jsonl.gz"


def _replay_records() -> list[tuple[str, str]]:
    """The real recorded capture as Kafka (key, value) pairs, as ``produce --source replay``."""
    from ingestion.replay import read_replay
    from ingestion.states import response_to_records

    pairs = []
    for i, response in enumerate(read_replay(FIXTURE)):
        for record in response_to_records(response, "replay", 1_700_000_000_000 + i):
            pairs.append((record["icao24"], json.dumps(record)))
    return pairs


def _with_rejects(records: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The capture holds no record silver rejects: add one per kind of reason, made from a
    real record, in the middle of the stream."""
    key, value = records[100]
    real = json.loads(value)
    bad = [(key, value[: len(value) // 2]),  # malformed_json
           (key, json.dumps({**real, "icao24": "zz12!x"})),
           (key, json.dumps({**real, "time_position": None})),
           (key, json.dumps({**real, "latitude": 91.5})),
           (key, json.dumps({**real, "baro_altitude": 31000.0})),
           (key, json.dumps({**real, "velocity": 1500.0}))]
    return records[:101] + bad + records[101:]


@pytest.mark.integration
def test_executors_run_the_shipped_code_with_this_python(lake, cluster, s3):
    """Python on the executors imports the project from the shipped zip, under this venv."""
    settings = _on_cluster(lake, cluster, s3, "probe")
    script = (
        "from lakehouse.settings import load_settings\n"
        "from lakehouse.spark import build_spark\n"
        "spark = build_spark(load_settings(), app_name='opensky-lakehouse probe', register=False)\n"
        "def where(_):\n"
        "    import sys, lakehouse.catalog as c\n"
        "    return c.__file__ + '|' + sys.executable\n"
        "print('WHERE', spark.sparkContext.parallelize([0], 1).map(where).first())\n"
        "spark.stop()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=cli_env(settings, **_cluster_env(s3)),
                         capture_output=True, text=True, timeout=300, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WHERE ")), None)
    assert line, out.stderr[-4000:]
    module_file, python = line[len("WHERE "):].split("|")
    assert re.search(r"opensky-lakehouse-[0-9a-f]{12}\.zip/lakehouse/catalog\.py$", module_file), module_file
    assert os.path.realpath(python) == os.path.realpath(sys.executable)
    assert _app_on_master(cluster, "opensky-lakehouse probe").get("cores") == 1


# Columns stamped with the wall clock of the run that wrote them; everything else must match.
PROCESSING_TIME = {
    "bronze.opensky_states": ("ingested_at", "ingest_date"),
    "silver.flights": ("processed_at",),
    "silver.quarantine": ("quarantined_at",),
    "gold.live_flights": ("updated_at",),
    "gold.anomalies": ("detected_at",),
    "gold.window_stats": (),
    "gold.country_counts": (),
}


def _rows(settings, name: str):
    """Every row of a table but its processing-time columns, arrays as tuples, in a total order:
    two such frames are equal exactly when the tables hold the same multiset of rows."""
    from lakehouse.catalog import table

    columns = [c for c in table(name).columns if c not in PROCESSING_TIME[name]]
    frame = _read_all(settings, name, columns)
    for c in columns:
        if frame[c].dtype == object:
            frame[c] = frame[c].map(lambda v: tuple(v) if hasattr(v, "__len__") and not isinstance(v, str) else v)
    return frame.sort_values(columns, na_position="first").reset_index(drop=True)


def _read_all(settings, name: str, columns: list[str]):
    from deltalake import DeltaTable

    from lakehouse.catalog import table_path

    dt = DeltaTable(delta_uri(table_path(settings, name)), storage_options=storage_options(settings))
    return dt.to_pandas(columns=columns)


def _gold_view(reader):
    """What the dashboard shows at the newest moment: live flights, every window, the newest
    country counts and the anomalies, each in a stable order."""
    exists = reader.refresh()
    assert all(exists.values()), exists
    moment = reader.moment()
    everything = 10 ** 7  # minutes: the whole replay
    views = {
        "live": (reader.live(moment.version), ["icao24"]),
        "windows": (reader.windows(moment, everything), ["window_start"]),
        "countries": (reader.countries(moment), ["origin_country"]),
        "anomalies": (reader.anomalies(moment, everything), ["icao24", "event_time"]),
    }
    out = {}
    for name, (frame, keys) in views.items():
        frame = frame.copy()
        if "rules" in frame:
            frame["rules"] = frame["rules"].map(lambda v: None if v is None else tuple(v))
        out[name] = frame.sort_values(keys).reset_index(drop=True)
    return out


@pytest.mark.integration
def test_layers_on_cluster_and_s3_equal_the_local_run(spark, lake, cluster, s3, tmp_path, capsys):
    """Bronze, silver and gold ``--once`` on the cluster against S3 hold exactly the rows of the
    same jobs run locally on the same records (processing-time stamps aside), gold scored by the
    same model on the executors; the dashboard's reader sees the same gold from S3."""
    import pandas as pd

    from dashboard import data
    from ml.training import train

    records = _with_rejects(_replay_records())
    n = len(records)
    # One model directory for both runs: artefacts are local files the driver broadcasts.
    lake = lake.replace(ml={"model_dir": str(tmp_path / "models")})
    remote = _on_cluster(lake, cluster, s3, "lake")
    local_rate, cluster_rate = {}, {}

    produce(lake, records[:n - 500])
    # The reference: the same records through the same jobs on the local session.
    local_rate["bronze"] = _run_local(spark, lake, "bronze")
    local = _read(lake, "bronze.opensky_states", BRONZE_KEY_COLUMNS)

    started = time.monotonic()
    result = run_cli(remote, "run", "bronze", "--once", **_cluster_env(s3))
    wall = {"bronze": time.monotonic() - started}
    cluster_rate["bronze"] = _cluster_rate(result.stderr, "bronze")
    app = _app_on_master(cluster, "opensky-lakehouse bronze")
    assert app.get("state") == "FINISHED" and app.get("cores") == 1, app  # it ran on the cluster

    reader = _with_secrets(remote, s3)
    on_s3 = _read(reader, "bronze.opensky_states", BRONZE_KEY_COLUMNS)
    assert len(on_s3) == n - 500
    assert on_s3.equals(local)
    keys = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="lake/bronze/opensky_states/_delta_log/")
    assert any(o["Key"].endswith("00000000000000000001.json") for o in keys.get("Contents", []))

    info = table_info(reader, "bronze.opensky_states")
    assert info["exists"] and info["rows"] == n - 500 and info["path"].startswith("s3a://")
    # `status` reads the same through delta-rs with credentials from the environment only.
    status = json.loads(run_cli(remote, "status", "--json", **_cluster_env(s3)).stdout)
    bronze_status = next(t for t in status["tables"] if t["table"] == "bronze.opensky_states")
    assert bronze_status["rows"] == n - 500
    assert status["bronze_kafka"]["lag"] == 0  # from the checkpoint on S3

    # The rest of the replay, then every layer locally; a model trained on the local silver.
    produce(lake, records[n - 500:])
    _run_local(spark, lake, "bronze")
    local_rate["silver"] = _run_local(spark, lake, "silver")
    version, _ = train(lake)
    local_rate["gold"] = _run_local(spark, lake, "gold")

    # On the cluster: bronze restarts from its S3 checkpoint, then silver, then gold, in one
    # application (`run all --once` runs the three jobs one after the other).
    started = time.monotonic()
    again = run_cli(remote, "run", "all", "--once", **_cluster_env(s3), timeout=600)
    wall["all"] = time.monotonic() - started
    app = _app_on_master(cluster, "opensky-lakehouse bronze+silver+gold")
    assert app.get("state") == "FINISHED" and app.get("cores") == 1, app
    for layer in ("silver", "gold"):
        cluster_rate[layer] = _cluster_rate(again.stderr, layer)
    assert f"scoring with model {version}" in again.stderr  # the pandas UDF ran on the executors
    # Restart from the S3 checkpoint: only the new records, each once.
    table = _read(reader, "bronze.opensky_states", ["partition", "offset"])
    assert len(table) == n and not table.duplicated().any()

    for name in PROCESSING_TIME:
        expected, got = _rows(lake, name), _rows(reader, name)
        assert len(expected) > 0, name
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=name)
    assert set(_rows(reader, "gold.live_flights")["model_version"]) == {version}

    # The dashboard's data layer, configured as the app is (settings from the environment).
    app_settings = load_settings(profile="test", env={**remote.to_env(), **s3.credentials}, dotenv=None)
    on_s3_reader = data.get_reader(app_settings)
    assert on_s3_reader.sources[data.LIVE].uri.startswith("s3://")
    shown, expected_view = _gold_view(on_s3_reader), _gold_view(data.GoldReader(lake))
    for name, frame in expected_view.items():
        pd.testing.assert_frame_equal(shown[name], frame, check_exact=True, obj=name)
    assert len(shown["live"]) > 0 and len(shown["windows"]) > 0

    # Each layer read the same rows on both sides (bronze: the first n - 500 records).
    assert {k: v[0] for k, v in cluster_rate.items()} == {k: v[0] for k, v in local_rate.items()}
    with capsys.disabled():
        print(f"\n[scale-out] the same records per layer, rows / Spark's batch seconds (JVM start and "
              f"jar shipping excluded): local[2] in this process vs `run --once` on the cluster "
              f"(1 worker x 1 core) + S3; load average {os.getloadavg()[0]:.1f}")
        for layer in ("bronze", "silver", "gold"):
            (rows, local_s), (_, cluster_s) = local_rate[layer], cluster_rate[layer]
            local_rps, cluster_rps = rows / max(local_s, 1e-3), rows / max(cluster_s, 1e-3)
            print(f"[scale-out] {layer:6s} {rows:5d} rows: local {local_rps:6,.0f} rows/s ({local_s:5.1f} s), "
                  f"cluster {cluster_rps:6,.0f} rows/s ({cluster_s:5.1f} s), cluster/local {cluster_rps / local_rps:.2f}")
        print(f"[scale-out] wall of the cluster commands: run bronze {wall['bronze']:.0f} s, "
              f"run all {wall['all']:.0f} s")
