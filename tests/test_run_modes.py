"""Which queries `run all` starts on a root, and a layer job refusing a root the pipeline feeds.

A root is fed either by `run all`'s single query or by the layer jobs: each keeps its own progress
in its checkpoints, so mixing them would read the same records twice. No Spark needed here: the
decision is made from the checkpoints before a session starts.
"""

from __future__ import annotations

from pathlib import Path

from lakehouse.catalog import LAYER_CHECKPOINTS, PIPELINE_CHECKPOINT, checkpoint_path
from lakehouse.settings import load_settings
from lakehouse.status import feeding_mode, layer_checkpoints, pipeline_started
from tests.helpers import run_cli


def _settings(tmp_path):
    return load_settings(profile="test").replace(storage={"root": str(tmp_path / "lake")})


def _planned(settings, job: str, query: str) -> None:
    offsets = Path(checkpoint_path(settings, job, query), "offsets")
    offsets.mkdir(parents=True)
    (offsets / "0").write_text("v1\n{}\n")


def test_a_new_root_is_fed_by_the_pipeline(tmp_path):
    settings = _settings(tmp_path)
    assert feeding_mode(settings) == "pipeline" and not pipeline_started(settings)
    # a checkpoint directory without a planned batch (a start that failed) decides nothing
    Path(checkpoint_path(settings, *LAYER_CHECKPOINTS["bronze"]), "offsets").mkdir(parents=True)
    assert feeding_mode(settings) == "pipeline"


def test_a_root_the_layer_jobs_feed_stays_with_them(tmp_path):
    settings = _settings(tmp_path)
    _planned(settings, *LAYER_CHECKPOINTS["bronze"])
    assert layer_checkpoints(settings) == ["bronze"]
    assert feeding_mode(settings) == "layers"


def test_a_root_the_pipeline_feeds_stays_with_it_and_layer_jobs_refuse_it(tmp_path):
    settings = _settings(tmp_path)
    _planned(settings, *PIPELINE_CHECKPOINT)
    assert feeding_mode(settings) == "pipeline"
    result = run_cli(settings, "run", "silver", "--once", check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "is fed by `run all`" in result.stderr and "Use `opensky-lakehouse run all`" in result.stderr
    assert "Traceback" not in result.stderr
