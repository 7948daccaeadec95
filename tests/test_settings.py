"""Configuration: one resolution rule, one-line errors naming the key, secrets never shown."""

from __future__ import annotations

import pytest

from lakehouse.settings import ConfigError, load_settings
from tests.helpers import run_cli


def test_defaults_cover_the_documented_settings():
    s = load_settings(env={}, dotenv=None)
    assert s.storage.root == "./data/lakehouse"
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.topic == "opensky.states"
    assert s.kafka.partitions == 3
    assert s.spark.master == "local[*]"
    assert s.validation.baro_altitude_max_m == 25000
    assert s.gold.live_window == "5 minutes"


def test_precedence_default_profile_file_environment(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("kafka:\n  topic: from-file\n  partitions: 7\nspark:\n  master: local[1]\n")
    s = load_settings(
        config_file=config,
        profile="test",
        env={"OPENSKY_LAKEHOUSE_KAFKA__TOPIC": "from-env"},
        dotenv=None,
    )
    assert s.spark.shuffle_partitions == 2  # profile over default
    assert s.spark.master == "local[1]"  # file over profile
    assert s.kafka.partitions == 7  # file over default
    assert s.kafka.topic == "from-env"  # environment over everything


def test_dotenv_fills_only_unset_variables(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("OPENSKY_LAKEHOUSE_KAFKA__TOPIC=from-dotenv\nOPENSKY_CLIENT_ID=me\n")
    s = load_settings(env={}, dotenv=dotenv)
    assert s.kafka.topic == "from-dotenv"
    assert s.secrets.opensky_client_id == "me"
    s = load_settings(env={"OPENSKY_LAKEHOUSE_KAFKA__TOPIC": "env-wins"}, dotenv=dotenv)
    assert s.kafka.topic == "env-wins"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("OPENSKY_LAKEHOUSE_KAFKA__PARTITIONS", "zero", "kafka.partitions"),
        ("OPENSKY_LAKEHOUSE_KAFKA__PARTITIONS", "0", "kafka.partitions"),
        ("OPENSKY_LAKEHOUSE_KAFKA__BOOTSTRAP_SERVERS", "nohostport", "kafka.bootstrap_servers"),
        ("OPENSKY_LAKEHOUSE_GOLD__LIVE_WINDOW", "5 fortnights", "gold.live_window"),
        ("OPENSKY_LAKEHOUSE_KAFKA__STARTING_OFFSETS", "middle", "kafka.starting_offsets"),
        ("OPENSKY_LAKEHOUSE_KAFKA__NO_SUCH_KEY", "1", "OPENSKY_LAKEHOUSE_KAFKA__NO_SUCH_KEY"),
    ],
)
def test_wrong_value_names_the_key(variable, value, named):
    with pytest.raises(ConfigError) as err:
        load_settings(env={variable: value}, dotenv=None)
    assert named in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="local"):
        load_settings(profile="nope", env={}, dotenv=None)


def test_secrets_never_in_repr():
    s = load_settings(env={"OPENSKY_CLIENT_ID": "id", "OPENSKY_CLIENT_SECRET": "hunter2-secret"}, dotenv=None)
    assert "hunter2-secret" not in repr(s)
    assert "hunter2-secret" not in repr(s.secrets)
    assert "hunter2-secret" not in str(s.to_env())


def test_cli_wrong_value_is_one_line_exit_2():
    base = load_settings(env={}, dotenv=None)
    result = run_cli(base, "kafka", "status", check=False, OPENSKY_LAKEHOUSE_KAFKA__PARTITIONS="-3")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "kafka.partitions" in lines[0]
    assert "Traceback" not in result.stderr


def test_replace_checks_the_new_values_as_loading_does():
    s = load_settings(env={}, dotenv=None)
    assert s.replace(kafka={"topic": "t2"}).kafka.topic == "t2" and s.kafka.topic != "t2"
    with pytest.raises(ConfigError, match=r"^opensky\.bbox: expected"):
        s.replace(opensky={"bbox": "1,2"})
    with_keys = s.replace(secrets={"aws_access_key_id": "AKIA", "aws_secret_access_key": "hunter2-secret"})
    assert with_keys.secrets.aws_access_key_id == "AKIA" and "hunter2-secret" not in repr(with_keys)
