"""Typed configuration: one resolution rule for every setting.

Precedence (later wins): ``conf/default.yaml`` < ``conf/<profile>.yaml`` < ``--config FILE``
< environment variables ``OPENSKY_LAKEHOUSE_<SECTION>__<KEY>``. A ``.env`` file in the working
directory fills environment variables that are not already set. Secrets are read from the
environment only and never printed. Any wrong value raises :class:`ConfigError` whose message is
one line naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
ENV_PREFIX = "OPENSKY_LAKEHOUSE_"
PROFILE_ENV = ENV_PREFIX + "PROFILE"
CONFIG_ENV = ENV_PREFIX + "CONFIG"

_DURATION = re.compile(r"^\d+(\.\d+)?\s*(milliseconds?|seconds?|minutes?|hours?|days?)$")


class ConfigError(ValueError):
    """A setting is missing, unknown or has a value outside what is allowed."""


@dataclass(frozen=True)
class StorageSettings:
    root: str
    s3_endpoint: str
    s3_region: str
    s3_path_style_access: bool

    @property
    def is_object_store(self) -> bool:
        return "://" in self.root and not self.root.startswith("file:")


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    topic: str
    partitions: int
    data_dir: str
    controller_port: int
    version: str
    heap: str
    start_timeout_s: float
    starting_offsets: str
    max_offsets_per_trigger: int
    fail_on_data_loss: bool

    @property
    def host(self) -> str:
        return self.bootstrap_servers.split(",")[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])


@dataclass(frozen=True)
class SparkSettings:
    master: str
    app_name: str
    shuffle_partitions: int
    driver_memory: str
    java_options: str
    log_level: str
    ui_enabled: bool
    codegen: bool
    fast_local_fs: bool
    cache_dir: str
    extra_packages: str
    extra_conf: str


@dataclass(frozen=True)
class StreamingSettings:
    bronze_trigger: str
    silver_trigger: str
    gold_trigger: str
    pipeline_trigger: str
    timings_log: str


@dataclass(frozen=True)
class ValidationSettings:
    baro_altitude_min_m: float
    baro_altitude_max_m: float
    velocity_min_ms: float
    velocity_max_ms: float
    vertical_rate_min_ms: float
    vertical_rate_max_ms: float
    time_position_max_ahead_s: int


@dataclass(frozen=True)
class SilverSettings:
    dedup_watermark: str
    max_files_per_trigger: int


@dataclass(frozen=True)
class GoldSettings:
    live_window: str
    window_duration: str
    window_watermark: str
    state_retention: str
    max_files_per_trigger: int


@dataclass(frozen=True)
class RulesSettings:
    emergency_squawk_enabled: bool
    emergency_squawks: str
    rapid_descent_enabled: bool
    rapid_descent_ms: float
    extreme_speed_enabled: bool
    extreme_speed_ms: float
    position_jump_enabled: bool
    position_jump_factor: float
    position_jump_min_excess_ms: float
    low_altitude_enabled: bool
    low_altitude_m: float
    low_altitude_min_speed_ms: float

    @property
    def squawk_codes(self) -> tuple[str, ...]:
        return tuple(code.strip() for code in self.emergency_squawks.split(",") if code.strip())


@dataclass(frozen=True)
class OpenSkySettings:
    api_url: str
    token_url: str
    bbox: str
    extended: bool
    daily_credits: int
    poll_interval_s: float
    timeout_s: float
    max_retries: int
    backoff_base_s: float
    backoff_max_s: float
    token_refresh_margin_s: float
    max_retry_after_s: float


@dataclass(frozen=True)
class ProducerSettings:
    compression: str
    linger_ms: int
    batch_size: int
    flush_timeout_s: float
    delivery_timeout_s: float
    max_block_s: float
    log_every_s: float


@dataclass(frozen=True)
class SimulatorSettings:
    seed: int
    aircraft: int
    interval_s: float
    anomaly_rate: float
    ground_fraction: float


@dataclass(frozen=True)
class MlSettings:
    model_dir: str
    tail_quantile: float
    contamination: float
    model_version: str
    arrow_batch_size: int
    random_state: int
    score_threshold: float
    reload_interval_s: float
    max_training_rows: int


@dataclass(frozen=True)
class DashboardSettings:
    port: int
    refresh_s: float
    stale_after_s: float
    trail_minutes: float
    trail_max_versions: int
    play_interval_s: float
    feed_minutes: float
    feed_rows: int
    trend_minutes: float
    cache_versions: int


@dataclass(frozen=True)
class MaintainSettings:
    retention_hours: int
    optimize: bool
    vacuum: bool


@dataclass(frozen=True)
class Secrets:
    """Credentials from the environment only. ``repr`` never shows their values."""

    opensky_client_id: str | None = None
    opensky_client_secret: str | None = dataclasses.field(default=None, repr=False)
    aws_access_key_id: str | None = dataclasses.field(default=None, repr=False)
    aws_secret_access_key: str | None = dataclasses.field(default=None, repr=False)

    @property
    def has_opensky_credentials(self) -> bool:
        return bool(self.opensky_client_id and self.opensky_client_secret)


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings
    kafka: KafkaSettings
    spark: SparkSettings
    streaming: StreamingSettings
    validation: ValidationSettings
    silver: SilverSettings
    gold: GoldSettings
    rules: RulesSettings
    opensky: OpenSkySettings
    producer: ProducerSettings
    simulator: SimulatorSettings
    ml: MlSettings
    dashboard: DashboardSettings
    maintain: MaintainSettings
    secrets: Secrets = dataclasses.field(default_factory=Secrets, repr=False)

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """Return a copy with some keys changed: ``s.replace(kafka={"topic": "t"})``."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()
        }
        return dataclasses.replace(self, **changed)

    def to_env(self) -> dict[str, str]:
        """Every setting as ``OPENSKY_LAKEHOUSE_*`` variables (to hand this config to a subprocess)."""
        env = {}
        for section in _SECTIONS:
            for f in fields(_SECTIONS[section]):
                value = getattr(getattr(self, section), f.name)
                text = str(value).lower() if isinstance(value, bool) else str(value)
                env[f"{ENV_PREFIX}{section.upper()}__{f.name.upper()}"] = text
        return env

    def child_env(self, project: str | os.PathLike | None = None) -> dict[str, str]:
        """The environment of a child process that is to see exactly these settings: this process's
        environment without any ``OPENSKY_LAKEHOUSE_*`` variable, plus :meth:`to_env`; with
        ``project``, that checkout first on ``PYTHONPATH``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(self.to_env())
        if project:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(project), env.get("PYTHONPATH", "")) if p)
        return env


_SECTIONS: dict[str, type] = {
    f.name: f.type if isinstance(f.type, type) else globals()[f.type]
    for f in fields(Settings)
    if f.name != "secrets"
}

_CHOICES = {
    ("kafka", "starting_offsets"): ("earliest", "latest"),
    ("spark", "log_level"): ("ERROR", "WARN", "INFO", "DEBUG"),
    ("producer", "compression"): ("none", "gzip", "snappy", "lz4", "zstd"),
}
_POSITIVE = {
    ("kafka", "partitions"),
    ("spark", "shuffle_partitions"),
    ("kafka", "start_timeout_s"),
    ("simulator", "aircraft"),
    ("simulator", "interval_s"),
    ("ml", "arrow_batch_size"),
    ("dashboard", "port"),
    ("dashboard", "refresh_s"),
    ("dashboard", "stale_after_s"),
    ("dashboard", "trail_minutes"),
    ("dashboard", "trail_max_versions"),
    ("dashboard", "play_interval_s"),
    ("dashboard", "feed_minutes"),
    ("dashboard", "feed_rows"),
    ("dashboard", "trend_minutes"),
    ("dashboard", "cache_versions"),
    ("opensky", "timeout_s"),
    ("opensky", "max_retry_after_s"),
    ("producer", "batch_size"),
    ("producer", "flush_timeout_s"),
    ("producer", "delivery_timeout_s"),
    ("producer", "max_block_s"),
    ("producer", "log_every_s"),
}
_NON_NEGATIVE = {
    ("kafka", "controller_port"),
    ("kafka", "max_offsets_per_trigger"),
    ("opensky", "daily_credits"),
    ("opensky", "poll_interval_s"),
    ("ml", "reload_interval_s"),
    ("ml", "max_training_rows"),
    ("opensky", "max_retries"),
    ("opensky", "backoff_base_s"),
    ("opensky", "backoff_max_s"),
    ("opensky", "token_refresh_margin_s"),
    ("producer", "linger_ms"),
    ("maintain", "retention_hours"),
    ("validation", "time_position_max_ahead_s"),
    ("silver", "max_files_per_trigger"),
    ("gold", "max_files_per_trigger"),
}
_DURATIONS = {
    ("streaming", "bronze_trigger"),
    ("streaming", "silver_trigger"),
    ("streaming", "gold_trigger"),
    ("streaming", "pipeline_trigger"),
    ("silver", "dedup_watermark"),
    ("gold", "live_window"),
    ("gold", "window_duration"),
    ("gold", "window_watermark"),
    ("gold", "state_retention"),
}


def _coerce(section: str, key: str, kind: type, raw: Any) -> Any:
    name = f"{section}.{key}"
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")
    if kind is int:
        try:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if kind is float:
        try:
            if isinstance(raw, bool):
                raise ValueError
            return float(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if raw is None:
        return ""
    return str(raw)


def _check(section: str, key: str, value: Any) -> None:
    name = f"{section}.{key}"
    allowed = _CHOICES.get((section, key))
    if allowed and value not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    if (section, key) in _POSITIVE and value <= 0:
        raise ConfigError(f"{name}: expected a number greater than 0, got {value!r}")
    if (section, key) in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"{name}: expected a number of 0 or more, got {value!r}")
    if (section, key) in _DURATIONS and not _DURATION.match(value.strip()):
        raise ConfigError(f"{name}: expected a duration such as '30 seconds' or '5 minutes', got {value!r}")
    if (section, key) == ("kafka", "bootstrap_servers"):
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"kafka.bootstrap_servers: expected host:port[,host:port...], got {value!r}")
    if (section, key) == ("spark", "extra_conf") and value.strip():
        for item in re.split(r",\s*(?=spark\.)", value.strip()):
            k, eq, _ = item.partition("=")
            if not eq or not re.fullmatch(r"spark\.[A-Za-z0-9._-]+", k.strip()):
                raise ConfigError(f"spark.extra_conf: expected 'spark.key=value[, spark.key=value...]', got {item!r}")
    if (section, key) == ("kafka", "topic") and not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
        raise ConfigError(f"kafka.topic: expected 1-249 of letters, digits, '.', '_', '-', got {value!r}")
    if (section, key) in (("simulator", "anomaly_rate"), ("simulator", "ground_fraction")) and not 0 <= value <= 1:
        raise ConfigError(f"{name}: expected a fraction between 0 and 1, got {value!r}")
    if (section, key) == ("ml", "contamination") and not 0 < value <= 0.5:
        raise ConfigError(f"ml.contamination: expected a fraction in (0, 0.5], got {value!r}")
    if (section, key) == ("ml", "tail_quantile") and not 0.5 <= value < 1:
        raise ConfigError(f"ml.tail_quantile: expected a quantile in [0.5, 1), got {value!r}")
    if (section, key) == ("ml", "score_threshold") and not 0 <= value < 1:
        raise ConfigError(f"ml.score_threshold: expected 0 (use the model's) or a score in (0, 1), got {value!r}")
    if (section, key) == ("ml", "model_version") and value and not re.fullmatch(r"v\d{4,}", value):
        raise ConfigError(f"ml.model_version: expected empty (newest) or a version such as v0003, got {value!r}")
    if (section, key) == ("opensky", "bbox") and value.strip():
        parts = value.split(",")
        try:
            lamin, lomin, lamax, lomax = (float(p) for p in parts)
        except ValueError:
            raise ConfigError(f"opensky.bbox: expected 'lamin,lomin,lamax,lomax' in degrees, got {value!r}") from None
        if not (-90 <= lamin < lamax <= 90 and -180 <= lomin < lomax <= 180):
            raise ConfigError(f"opensky.bbox: expected -90<=lamin<lamax<=90 and -180<=lomin<lomax<=180, got {value!r}")


def _read_yaml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigError(f"config file {path}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections")
    for section, values in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{section}: unknown section in {path}; allowed: {', '.join(_SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping of keys in {path}")
        known = {f.name for f in fields(_SECTIONS[section])}
        for key in values:
            if key not in known:
                raise ConfigError(f"{section}.{key}: unknown setting in {path}; allowed: {', '.join(sorted(known))}")
    return data


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_settings(
    config_file: str | os.PathLike | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    dotenv: str | os.PathLike | None = ".env",
) -> Settings:
    """Resolve every setting; raise :class:`ConfigError` (one line) on any wrong value."""
    environ = dict(read_dotenv(Path(dotenv))) if dotenv else {}
    environ.update(os.environ if env is None else env)

    merged: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    layers = [CONF_DIR / "default.yaml"]
    profile = profile or environ.get(PROFILE_ENV) or None
    if profile:
        profile_file = CONF_DIR / f"{profile}.yaml"
        if not profile_file.is_file():
            names = sorted(p.stem for p in CONF_DIR.glob("*.yaml") if p.stem != "default")
            raise ConfigError(f"profile: unknown profile {profile!r}; allowed: {', '.join(names)}")
        layers.append(profile_file)
    config_file = config_file or environ.get(CONFIG_ENV) or None
    if config_file:
        layers.append(Path(config_file))
    for layer in layers:
        for section, values in _read_yaml(layer).items():
            merged[section].update(values)

    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name in (PROFILE_ENV, CONFIG_ENV):
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        if section not in _SECTIONS or key not in {f.name for f in fields(_SECTIONS[section])}:
            raise ConfigError(f"{name}: no such setting (expected {ENV_PREFIX}<SECTION>__<KEY> of conf/default.yaml)")
        merged[section][key] = raw

    built = {}
    for section, cls in _SECTIONS.items():
        values = {}
        for f in fields(cls):
            if f.name not in merged[section]:
                raise ConfigError(f"{section}.{f.name}: missing (add it to conf/default.yaml)")
            kind = {"str": str, "int": int, "float": float, "bool": bool}.get(str(f.type), f.type)
            value = _coerce(section, f.name, kind, merged[section][f.name])
            _check(section, f.name, value)
            values[f.name] = value
        built[section] = cls(**values)

    secrets = Secrets(
        opensky_client_id=environ.get("OPENSKY_CLIENT_ID") or None,
        opensky_client_secret=environ.get("OPENSKY_CLIENT_SECRET") or None,
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
    )
    return Settings(**built, secrets=secrets)


def resolve_path(path: str, base: str | None = None) -> str:
    """Expand ``~`` and make a local path absolute (against ``base`` if given); URIs pass through."""
    if "://" in path:
        return path.rstrip("/")
    expanded = Path(path).expanduser()
    if not expanded.is_absolute() and base is not None:
        return join_path(base, path)
    return str(expanded.resolve())


def join_path(root: str, *parts: str) -> str:
    """Join path parts under a local path or URI root."""
    if "://" in root:
        return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(resolve_path(root)).joinpath(*parts))
