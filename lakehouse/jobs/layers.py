"""The layer jobs by name: ``bronze``, ``silver``, ``gold`` and ``pipeline`` (all three in one query)."""

from __future__ import annotations

LAYERS = ("bronze", "silver", "gold")
JOBS = (*LAYERS, "pipeline")


def job_module(name: str):
    """The job module ``lakehouse.jobs.<name>`` (imported on demand: each pulls in Spark)."""
    from lakehouse.jobs import bronze, gold, pipeline, silver

    modules = {"bronze": bronze, "silver": silver, "gold": gold, "pipeline": pipeline}
    if name not in modules:
        raise ValueError(f"no layer job {name!r}: expected one of {', '.join(JOBS)}")
    return modules[name]


def run_layers(settings, layers: list[str], once: bool) -> int:
    """Run the named jobs in one Spark application (see ``lakehouse.jobs.runner.run_jobs``)."""
    from lakehouse.jobs.runner import run_jobs

    return run_jobs(settings, {name: job_module(name).start for name in layers}, once=once)
