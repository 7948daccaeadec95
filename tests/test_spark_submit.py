"""``spark-submit $(opensky-lakehouse spark-conf) lakehouse/jobs/bronze.py --once``, as the README
says, through a real shell, a real broker and real Delta; and the output contract of
``spark-conf`` (bare words, whitespace refused, a properties file for values with spaces)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from pyspark.testing import assertDataFrameEqual

from lakehouse.app.commands.spark_conf import properties_text
from lakehouse.catalog import table_path
from tests.helpers import REPO, cli_env, run_cli

SPARK_SUBMIT = os.path.join(os.path.dirname(sys.executable), "spark-submit")


def _activated_shell_env(settings) -> dict[str, str]:
    """The settings as environment, in a shell where the venv is activated (its ``bin`` first on
    PATH, as ``source .venv/bin/activate`` leaves it) and nothing else helps: no PYTHONPATH, no
    SPARK_HOME, so the job finds its interpreter and packages the way a user's would."""
    env = cli_env(settings)
    for var in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_HOME"):
        env.pop(var, None)
    venv_bin = os.path.dirname(sys.executable)
    env["VIRTUAL_ENV"] = os.path.dirname(venv_bin)
    env["PATH"] = os.pathsep.join([venv_bin, *(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)])
    return env


def _produce_with_metadata(settings, records) -> list[tuple]:
    """Send ``(key, value)`` pairs; return ``(key, value, topic, partition, offset)`` as acked."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    try:
        futures = [(k, v, producer.send(settings.kafka.topic, key=k.encode(), value=v.encode()))
                   for k, v in records]
        acked = [(k, v, f.get(timeout=30)) for k, v, f in futures]
    finally:
        producer.close()
    return [(k, v, md.topic, md.partition, md.offset) for k, v, md in acked]


@pytest.mark.integration
def test_spark_submit_with_spark_conf_in_a_shell_fills_bronze(spark, lake):
    records = [(icao, json.dumps({"icao24": icao, "schema_version": 1, "callsign": " KLM1  ", "seq": i}))
               for i, icao in enumerate(["4b1814", "3c6444", "a0b1c2", "406b2e"])]
    expected = _produce_with_metadata(lake, records)

    env = _activated_shell_env(lake)
    assert shutil.which("spark-submit", path=env["PATH"]) == SPARK_SUBMIT
    # The README's line, verbatim, through bash's word splitting.
    script = "spark-submit $(opensky-lakehouse spark-conf) lakehouse/jobs/bronze.py --once"
    done = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"

    got = (spark.read.format("delta").load(table_path(lake, "bronze.opensky_states"))
           .select("key", "value", "topic", "partition", "offset"))
    want = spark.createDataFrame([(k.encode(), v.encode(), *rest) for k, v, *rest in expected],
                                 "key binary, value binary, topic string, partition int, offset long")
    assertDataFrameEqual(got, want)


@pytest.mark.integration
def test_spark_submit_outside_the_venv_runs_the_driver_in_the_project_interpreter(base_settings, tmp_path):
    """Venv not on PATH (``python3`` there lacks pyspark and the project), SPARK_HOME set: the
    driver still runs in this interpreter, where ``lakehouse`` imports, thanks to spark-conf."""
    import pyspark

    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nimport lakehouse\nprint('PROBE', sys.executable, lakehouse.__file__)\n")
    env = _activated_shell_env(base_settings)
    venv_bin = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env.pop("VIRTUAL_ENV")
    env["SPARK_HOME"] = os.path.dirname(pyspark.__file__)
    done = subprocess.run(["bash", "-c", '"$1" $("$2" -m lakehouse spark-conf) "$3"', "bash", SPARK_SUBMIT,
                           sys.executable, str(probe)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"PROBE {sys.executable} {REPO / 'lakehouse' / '__init__.py'}" in done.stdout


def test_spark_conf_prints_bare_words_that_survive_word_splitting(base_settings):
    printed = run_cli(base_settings, "spark-conf").stdout
    words = subprocess.run(["bash", "-c", 'printf "%s\\n" $(cat)'], input=printed,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert words[:2] == ["--master", "local[2]"]  # no quote characters left in the word
    assert f"spark.pyspark.driver.python={sys.executable}" in words
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in words
    assert all(w == "--conf" for w in words[2::2])


def test_spark_conf_refuses_a_value_with_spaces_and_writes_a_properties_file(base_settings, tmp_path):
    settings = base_settings.replace(storage={"root": str(tmp_path / "my lake")})
    refused = run_cli(settings, "spark-conf", check=False)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "spark.sql.warehouse.dir=" in refused.stderr and "--properties-file" in refused.stderr

    props = tmp_path / "lh.conf"
    written = run_cli(settings, "spark-conf", "--properties-file", str(props))
    assert written.stdout.split() == ["--properties-file", str(props)]
    assert f"spark.sql.warehouse.dir={tmp_path}/my lake/_catalog\n" in props.read_text()
    assert "spark.master=local[2]\n" in props.read_text()


def test_spark_conf_warns_when_the_shell_would_expand_a_word(base_settings, tmp_path, monkeypatch, capsys):
    import argparse

    from lakehouse.app.commands import spark_conf

    (tmp_path / "local2").touch()  # what an unquoted local[2] matches
    monkeypatch.chdir(tmp_path)
    assert spark_conf.run(argparse.Namespace(lines=False, properties_file=None), base_settings) == 0
    out, err = capsys.readouterr()
    assert out.startswith("--master local[2] ")
    assert "will expand 'local[2]' to ['local2']" in err


def test_properties_text_escapes_what_java_properties_would_change():
    assert properties_text({"a": "x y", "b": " lead", "c": "C:\\dir", "d": "1\n2"}) == (
        "a=x y\nb=\\ lead\nc=C:\\\\dir\nd=1\\n2\n")
