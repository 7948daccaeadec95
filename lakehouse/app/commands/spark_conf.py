"""Print the ``spark-submit`` options the layer jobs need (jars, Delta, quiet logs, Python).

    spark-submit $(opensky-lakehouse spark-conf) lakehouse/jobs/bronze.py --once

The options come from the same factory as every session (``lakehouse.spark.spark_conf``), so a
job behaves the same under ``spark-submit``, ``run`` and in a notebook.

The words are printed bare, never shell-quoted: the shell does not remove quotes that come out
of a command substitution (``--master 'local[*]'`` would reach spark-submit with the quote
characters), it only splits the output on whitespace and expands glob patterns. Hence:

* A value holding whitespace (a storage root or cache directory under ``/home/Jane Doe``)
  cannot survive ``$(...)``. ``spark-conf`` then refuses: it exits 2 with one line naming the
  option and prints nothing on stdout, so spark-submit fails at once instead of running with
  half a path. ``--properties-file FILE`` writes the same settings as a Java properties file
  (spaces allowed there) and prints only ``--properties-file FILE``, for
  ``spark-submit $(opensky-lakehouse spark-conf --properties-file /tmp/lh.conf) job.py``.
  (Since Spark 4.0 an explicit properties file replaces ``conf/spark-defaults.conf``; add
  ``--load-spark-defaults`` to read both.)
* ``local[*]`` is a glob pattern; it matches only a file literally named ``local*``. Any word
  that would match a file in the current directory is reported on stderr.

Finding Python and the project. The ``spark-submit`` of a pip-installed pyspark locates Spark
with ``python3`` from ``PATH`` (its ``find-spark-home``) unless ``SPARK_HOME`` is set, and starts
the driver with ``PYSPARK_DRIVER_PYTHON``, ``PYSPARK_PYTHON`` or ``python3``. A script path puts
only its own directory (``lakehouse/jobs``) on ``sys.path``, so ``lakehouse.*`` imports come
from the interpreter's installed packages (the editable install of ``make setup``). Hence: run
it with the venv activated, as the README does, or with ``SPARK_HOME`` set; and the options name
this interpreter as ``spark.pyspark.driver.python``, so the driver is the one that has the
project even when ``python3`` or ``PYSPARK_PYTHON`` is another. Executors keep the cluster's own
Python (``PYSPARK_PYTHON``, ``spark.pyspark.python``).
"""

from __future__ import annotations

import glob
import os
import sys

# spark-submit sets these itself from its own flags or they are session-only.
_SKIP = {"spark.app.name"}
_IFS = frozenset(" \t\n")  # what the shell's default word splitting cuts on


def configure(parser) -> None:
    parser.add_argument("--lines", action="store_true", help="one option per line")
    parser.add_argument(
        "--properties-file", metavar="FILE",
        help="write the settings to FILE (Java properties, spaces allowed) and print only "
        "'--properties-file FILE'",
    )


def submit_conf(settings) -> dict[str, str]:
    """The Spark settings a ``spark-submit`` of a layer job needs, ``spark.master`` included."""
    from lakehouse.spark import spark_conf

    conf = {k: v for k, v in spark_conf(settings).items() if k not in _SKIP}
    conf.setdefault("spark.pyspark.driver.python", sys.executable)
    return conf


def submit_args(conf: dict[str, str]) -> list[tuple[str, str]]:
    """``(flag, value)`` pairs: ``--master URL`` then ``--conf key=value`` for the rest."""
    pairs = [("--master", conf["spark.master"])] if "spark.master" in conf else []
    pairs += [("--conf", f"{k}={v}") for k, v in conf.items() if k != "spark.master"]
    return pairs


def properties_text(conf: dict[str, str]) -> str:
    """``conf`` in the Java properties format that ``spark-submit --properties-file`` reads."""
    def escape(value: str) -> str:
        value = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return "\\" + value if value.startswith(" ") else value  # leading blanks are dropped otherwise

    return "".join(f"{key}={escape(value)}\n" for key, value in conf.items())


def run(args, settings) -> int:
    conf = submit_conf(settings)
    if args.properties_file:
        path = os.path.abspath(args.properties_file)
        if _IFS & set(path):
            return _refuse("--properties-file", path)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(properties_text(conf))
        print(f"--properties-file {path}")
        return 0
    pairs = submit_args(conf)
    for flag, value in pairs:
        if _IFS & set(value):
            return _refuse(flag, value)
    for _flag, value in pairs:
        if set("*?[") & set(value) and glob.glob(value):
            print(f"opensky-lakehouse spark-conf: warning: the shell will expand {value!r} to "
                  f"{sorted(glob.glob(value))} (files in the current directory)", file=sys.stderr)
    print(("\n" if args.lines else " ").join(f"{flag} {value}" for flag, value in pairs))
    return 0


def _refuse(flag: str, value: str) -> int:
    print(f"opensky-lakehouse spark-conf: {flag} {value!r} contains whitespace, which $(...) would "
          "split into several words; use 'spark-conf --properties-file FILE' instead",
          file=sys.stderr)
    return 2
