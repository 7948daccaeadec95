"""Typed configuration: one resolution rule for every setting, pydantic-settings models.

Precedence (later wins): ``conf/default.yaml`` < ``conf/<profile>.yaml`` < ``--config FILE``
< environment variables ``OPENSKY_LAKEHOUSE_<SECTION>__<KEY>``. A ``.env`` file in the working
directory fills environment variables that are not already set. Secrets are read from the
environment only and never printed. Any wrong value raises :class:`ConfigError` whose message is
one line naming the key and what is allowed.

Each section is a frozen model whose field types and constraints say what is allowed; the YAML
files are read and deep-merged by pydantic-settings' YAML source, the variables by its
environment source (prefix ``OPENSKY_LAKEHOUSE_``, ``__`` between section and key).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
ENV_PREFIX = "OPENSKY_LAKEHOUSE_"
PROFILE_ENV = ENV_PREFIX + "PROFILE"
CONFIG_ENV = ENV_PREFIX + "CONFIG"

_DURATION = re.compile(r"^\d+(\.\d+)?\s*(milliseconds?|seconds?|minutes?|hours?|days?)$")


class ConfigError(ValueError):
    """A setting is missing, unknown or has a value outside what is allowed."""


def _duration(value: str) -> str:
    if not _DURATION.match(value.strip()):
        raise ValueError("expected a duration such as '30 seconds' or '5 minutes'")
    return value


def _servers(value: str) -> str:
    for server in value.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port[,host:port...]")
    return value


def _spark_conf(value: str) -> str:
    for item in re.split(r",\s*(?=spark\.)", value.strip()) if value.strip() else ():
        key, eq, _ = item.partition("=")
        if not eq or not re.fullmatch(r"spark\.[A-Za-z0-9._-]+", key.strip()):
            raise ValueError("expected 'spark.key=value[, spark.key=value...]'")
    return value


def _topic(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
        raise ValueError("expected 1-249 of letters, digits, '.', '_', '-'")
    return value


def _model_version(value: str) -> str:
    if value and not re.fullmatch(r"v\d{4,}", value):
        raise ValueError("expected empty (newest) or a version such as v0003")
    return value


def _bbox(value: str) -> str:
    if not value.strip():
        return value
    try:
        lamin, lomin, lamax, lomax = (float(p) for p in value.split(","))
    except ValueError:
        raise ValueError("expected 'lamin,lomin,lamax,lomax' in degrees") from None
    if not (-90 <= lamin < lamax <= 90 and -180 <= lomin < lomax <= 180):
        raise ValueError("expected -90<=lamin<lamax<=90 and -180<=lomin<lomax<=180")
    return value


def _between(low: float, high: float, what: str, low_open: bool = False, high_open: bool = False):
    def check(value: float) -> float:
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            raise ValueError(f"expected {what}")
        return value

    return AfterValidator(check)


Duration = Annotated[str, AfterValidator(_duration)]
Positive = Annotated[int, Field(gt=0)]
PositiveNumber = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, _between(0, 1, "a fraction between 0 and 1")]


class Section(BaseModel):
    """One section of ``conf/default.yaml``: every key required (the default file names them all),
    none other allowed; numbers written in YAML may stand for text settings."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


class StorageSettings(Section):
    root: str
    s3_endpoint: str
    s3_region: str
    s3_path_style_access: bool

    @property
    def is_object_store(self) -> bool:
        return "://" in self.root and not self.root.startswith("file:")


class KafkaSettings(Section):
    bootstrap_servers: Annotated[str, AfterValidator(_servers)]
    topic: Annotated[str, AfterValidator(_topic)]
    partitions: Positive
    data_dir: str
    controller_port: Count
    version: str
    heap: str
    start_timeout_s: PositiveNumber
    starting_offsets: Literal["earliest", "latest"]
    max_offsets_per_trigger: Count
    fail_on_data_loss: bool

    @property
    def host(self) -> str:
        return self.bootstrap_servers.split(",")[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])


class SparkSettings(Section):
    master: str
    app_name: str
    shuffle_partitions: Positive
    driver_memory: str
    java_options: str
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"]
    ui_enabled: bool
    codegen: bool
    fast_local_fs: bool
    cache_dir: str
    extra_packages: str
    extra_conf: Annotated[str, AfterValidator(_spark_conf)]


class StreamingSettings(Section):
    bronze_trigger: Duration
    silver_trigger: Duration
    gold_trigger: Duration
    pipeline_trigger: Duration
    timings_log: str


class ValidationSettings(Section):
    baro_altitude_min_m: float
    baro_altitude_max_m: float
    velocity_min_ms: float
    velocity_max_ms: float
    vertical_rate_min_ms: float
    vertical_rate_max_ms: float
    time_position_max_ahead_s: Count


class SilverSettings(Section):
    dedup_watermark: Duration
    max_files_per_trigger: Count


class GoldSettings(Section):
    live_window: Duration
    window_duration: Duration
    window_watermark: Duration
    state_retention: Duration
    max_files_per_trigger: Count


class RulesSettings(Section):
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


class OpenSkySettings(Section):
    api_url: str
    token_url: str
    bbox: Annotated[str, AfterValidator(_bbox)]
    extended: bool
    daily_credits: Count
    poll_interval_s: NonNegative
    timeout_s: PositiveNumber
    max_retries: Count
    backoff_base_s: NonNegative
    backoff_max_s: NonNegative
    token_refresh_margin_s: NonNegative
    max_retry_after_s: PositiveNumber


class ProducerSettings(Section):
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"]
    linger_ms: Count
    batch_size: Positive
    flush_timeout_s: PositiveNumber
    delivery_timeout_s: PositiveNumber
    max_block_s: PositiveNumber
    log_every_s: PositiveNumber


class SimulatorSettings(Section):
    seed: int
    aircraft: Positive
    interval_s: PositiveNumber
    anomaly_rate: Fraction
    ground_fraction: Fraction


class MlSettings(Section):
    model_dir: str
    tail_quantile: Annotated[float, _between(0.5, 1, "a quantile in [0.5, 1)", high_open=True)]
    contamination: Annotated[float, _between(0, 0.5, "a fraction in (0, 0.5]", low_open=True)]
    model_version: Annotated[str, AfterValidator(_model_version)]
    arrow_batch_size: Positive
    random_state: int
    score_threshold: Annotated[float, _between(0, 1, "0 (use the model's) or a score in (0, 1)", high_open=True)]
    reload_interval_s: NonNegative
    max_training_rows: Count


class DashboardSettings(Section):
    port: Positive
    refresh_s: PositiveNumber
    stale_after_s: PositiveNumber
    trail_minutes: PositiveNumber
    trail_max_versions: Positive
    play_interval_s: PositiveNumber
    feed_minutes: PositiveNumber
    feed_rows: Positive
    trend_minutes: PositiveNumber
    cache_versions: Positive
    cache_mb: Positive


class MaintainSettings(Section):
    retention_hours: Count
    live_retention_hours: Count
    optimize: bool
    vacuum: bool


class Secrets(BaseModel):
    """Credentials from the environment only. ``repr`` never shows their values."""

    model_config = ConfigDict(frozen=True)

    opensky_client_id: str | None = None
    opensky_client_secret: str | None = Field(default=None, repr=False)
    aws_access_key_id: str | None = Field(default=None, repr=False)
    aws_secret_access_key: str | None = Field(default=None, repr=False)

    @property
    def has_opensky_credentials(self) -> bool:
        return bool(self.opensky_client_id and self.opensky_client_secret)


class Settings(BaseSettings):
    """Every setting, by section. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      case_sensitive=False)

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
    secrets: Secrets = Field(default_factory=Secrets, repr=False)

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """Return a copy with some keys changed: ``s.replace(kafka={"topic": "t"})``; the new values
        are checked as a loaded one is (:class:`ConfigError`, one line, on a wrong one)."""
        changed = {}
        for name, values in sections.items():
            current = getattr(self, name)
            try:
                changed[name] = type(current).model_validate({**current.model_dump(), **values})
            except ValidationError as exc:
                raise ConfigError(_one_line(exc, name)) from None
        return self.model_copy(update=changed)

    def to_env(self) -> dict[str, str]:
        """Every setting as ``OPENSKY_LAKEHOUSE_*`` variables (to hand this config to a subprocess)."""
        env = {}
        for section in SECTIONS:
            for key, value in getattr(self, section):
                text = str(value).lower() if isinstance(value, bool) else str(value)
                env[f"{ENV_PREFIX}{section.upper()}__{key.upper()}"] = text
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

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what load_settings hands in (the YAML layers and the environment it resolved).
        return (init_settings,)


SECTIONS: tuple[str, ...] = tuple(name for name in Settings.model_fields if name != "secrets")


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (``.env`` under the process
    environment, or a test's) instead of ``os.environ``."""

    def __init__(self, settings_cls, environ: Mapping[str, str]):
        self._given = {k.lower(): v for k, v in environ.items()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._given


def _check_yaml(path: Path) -> None:
    """One line for what pydantic would report less plainly: a missing or broken file, a section
    or key that does not exist."""
    import yaml

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
        if section not in SECTIONS:
            raise ConfigError(f"{section}: unknown section in {path}; allowed: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping of keys in {path}")
        known = Settings.model_fields[section].annotation.model_fields
        for key in values:
            if key not in known:
                raise ConfigError(f"{section}.{key}: unknown setting in {path}; allowed: {', '.join(sorted(known))}")


def _check_environment(environ: Mapping[str, str]) -> None:
    for name in environ:
        if not name.startswith(ENV_PREFIX) or "__" not in name or name in (PROFILE_ENV, CONFIG_ENV):
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        if section not in SECTIONS or key not in Settings.model_fields[section].annotation.model_fields:
            raise ConfigError(f"{name}: no such setting (expected {ENV_PREFIX}<SECTION>__<KEY> of conf/default.yaml)")


def _one_line(error: ValidationError, section: str | None = None) -> str:
    """The first error as ``section.key: expected ..., got <value>``."""
    first = error.errors()[0]
    name = ".".join(str(part) for part in ((section,) if section else ()) + tuple(first["loc"]))
    kind, ctx = first["type"], first.get("ctx", {})
    if kind == "missing":
        return f"{name}: missing (add it to conf/default.yaml)"
    expected = {
        "int_parsing": "expected a whole number", "int_from_float": "expected a whole number",
        "int_type": "expected a whole number", "float_parsing": "expected a number", "float_type": "expected a number",
        "bool_parsing": "expected true or false", "bool_type": "expected true or false",
        "greater_than": f"expected a number greater than {ctx.get('gt', 0):g}",
        "greater_than_equal": f"expected a number of {ctx.get('ge', 0):g} or more",
        "literal_error": "expected one of " + str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", "),
        "extra_forbidden": "unknown setting",
    }.get(kind, first["msg"].removeprefix("Value error, "))
    return f"{name}: {expected}, got {first.get('input')!r}"


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes."""
    from dotenv import dotenv_values

    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    config_file: str | os.PathLike | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    dotenv: str | os.PathLike | None = ".env",
) -> Settings:
    """Resolve every setting; raise :class:`ConfigError` (one line) on any wrong value."""
    environ = dict(read_dotenv(Path(dotenv))) if dotenv else {}
    environ.update(os.environ if env is None else env)

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
        _check_yaml(layer)
    _check_environment(environ)

    files = YamlConfigSettingsSource(Settings, yaml_file=layers, deep_merge=True)()
    variables = _Environment(Settings, {k: v for k, v in environ.items()
                                        if k.startswith(ENV_PREFIX) and k not in (PROFILE_ENV, CONFIG_ENV)})()
    merged = {s: {**files.get(s, {}), **variables.get(s, {})} for s in SECTIONS}
    merged = {s: {k: ("" if v is None else v) for k, v in values.items()} for s, values in merged.items()}
    secrets = Secrets(
        opensky_client_id=environ.get("OPENSKY_CLIENT_ID") or None,
        opensky_client_secret=environ.get("OPENSKY_CLIENT_SECRET") or None,
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
    )
    try:
        return Settings(**merged, secrets=secrets)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


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
