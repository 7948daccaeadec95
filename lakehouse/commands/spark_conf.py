"""Print the ``spark-submit`` options the layer jobs need (jars, Delta, quiet logs).

    spark-submit $(opensky-lakehouse spark-conf) lakehouse/jobs/bronze.py --once

The options come from the same factory as every session (``lakehouse.spark.spark_conf``), so a
job behaves the same under ``spark-submit``, ``run`` and in a notebook.
"""

from __future__ import annotations

import shlex

# spark-submit sets these itself from its own flags or they are session-only.
_SKIP = {"spark.app.name"}


def configure(parser) -> None:
    parser.add_argument("--lines", action="store_true", help="one option per line")


def run(args, settings) -> int:
    from lakehouse.spark import spark_conf

    opts = []
    for key, value in spark_conf(settings).items():
        if key in _SKIP:
            continue
        if key == "spark.master":
            opts += ["--master", value]
        else:
            opts += ["--conf", f"{key}={value}"]
    pairs = [f"{opts[i]} {shlex.quote(opts[i + 1])}" for i in range(0, len(opts), 2)]
    print(("\n" if args.lines else " ").join(pairs))
    return 0
