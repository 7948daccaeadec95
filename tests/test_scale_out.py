"""Scale out by configuration alone: the same jobs on a Spark standalone cluster and on S3.

The cluster (one master, one worker with 1 core and 1g, from pyspark's jars) and the S3 server
(moto) are real processes on 127.0.0.1, started once for this module and always stopped. The
layer jobs run there as the user runs them, ``python -m lakehouse run <layer> --once`` with
``spark.master=spark://...`` and an ``s3a://`` root; their tables must equal a local run of
the same records, and delta-rs (status, dashboard) must read them from S3.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from lakehouse.cluster import S3Server, StandaloneCluster, spark_home
from lakehouse.settings import load_settings
from lakehouse.spark import code_archive, hadoop_version, s3_credentials_conf, spark_conf, spark_packages
from lakehouse.status import delta_uri, storage_options, table_info
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
    from dataclasses import replace

    return replace(settings, secrets=replace(
        settings.secrets, aws_access_key_id=s3.credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3.credentials["AWS_SECRET_ACCESS_KEY"]))


def _read(settings, name: str, columns: list[str]):
    """A table as a sorted pandas frame, read with delta-rs (local path or S3)."""
    from deltalake import DeltaTable

    from lakehouse.catalog import table_path

    dt = DeltaTable(delta_uri(table_path(settings, name)), storage_options=storage_options(settings))
    return dt.to_pandas(columns=columns).sort_values(columns).reset_index(drop=True)


def _app_on_master(cluster, name: str) -> dict:
    apps = cluster.state().get("completedapps", [])
    return next((a for a in reversed(apps) if a.get("name") == name), {})


def _rate(stderr: str, layer: str) -> tuple[int, float]:
    """Rows and rows/s of the progress lines of one ``--once`` run."""
    rows, rates = 0, []
    for m in re.finditer(rf"{layer} batch \d+: (\d+) rows, ([\d,]+) rows/s", stderr):
        rows += int(m.group(1))
        rates.append(float(m.group(2).replace(",", "")))
    return rows, max(rates) if rates else 0.0


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


@pytest.mark.integration
def test_bronze_on_cluster_and_s3_equals_the_local_run(spark, lake, cluster, s3, capsys):
    from lakehouse.jobs import bronze
    from lakehouse.jobs.common import await_queries

    records = _replay_records()
    n = len(records)
    produce(lake, records[:n - 500])
    # The reference: the same records through the same job on the local session.
    await_queries(bronze.start(spark, lake, once=True))
    local = _read(lake, "bronze.opensky_states", BRONZE_KEY_COLUMNS)

    remote = _on_cluster(lake, cluster, s3, "lake")
    result = run_cli(remote, "run", "bronze", "--once", **_cluster_env(s3))
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

    # Restart from the S3 checkpoint: only the new records, each once.
    produce(lake, records[n - 500:])
    again = run_cli(remote, "run", "bronze", "--once", **_cluster_env(s3))
    table = _read(reader, "bronze.opensky_states", ["partition", "offset"])
    assert len(table) == n and not table.duplicated().any()

    with capsys.disabled():
        rows, rate = _rate(result.stderr, "bronze")
        rows2, rate2 = _rate(again.stderr, "bronze")
        print(f"\n[scale-out] bronze on cluster+S3: {rows} rows at {rate:,.0f} rows/s; "
              f"restart {rows2} rows at {rate2:,.0f} rows/s")
