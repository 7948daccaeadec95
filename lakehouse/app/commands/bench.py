"""Run the benchmark suite: ``opensky-lakehouse bench [--quick] [--sections ...]``.

Writes ``<out>/<stamp>.json`` and ``<stamp>.md`` (full run: ``bench/results/``, and the README's
"Performance" section; ``--quick``: ``data/bench/results/``, README untouched). Everything runs
in a work directory with its own Kafka broker on free ports, removed at the end (``--keep``
keeps it). Sections run in this order: reads (delta-rs only), throughput + scoring (one
in-process SparkSession, stopped with its JVM afterwards), freshness + memory (``run all``
subprocesses, gold scoring with the model the throughput section trained). ``--render FILE`` only
re-renders the markdown and the README section from an existing result.

Full sizes (about 60-75 min on 2 cores): throughput 1,000,000 states x 3 runs after a
20,000-state warm-up; freshness at 1,000 and 10,000 states/s of simulated tracks and 1,000 of
real recorded ones, 3 windows of 120 s each per rate (6 min per rate) after 60 s of warm-up;
scoring 200,000 rows x 3; reads on 5,000 commits of 1,000 aircraft, 5 repeats. ``--quick`` (CI,
the harness not the numbers): 2,000 states x 1, freshness at 100 then 1,000 states/s, then 100
recorded, in one shared stack, one 15 s window each, scoring 5,000 rows, reads on 120 commits of
50 aircraft.
"""

from __future__ import annotations

from bench.suite import SECTIONS


def configure(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="everything small: checks the harness (CI)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (memory needs freshness)")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, --quick 1)")
    parser.add_argument("--records", type=int, help="throughput states per run (default 1,000,000)")
    parser.add_argument("--window", type=float, metavar="SECONDS", help="freshness window per run")
    parser.add_argument("--rates", metavar="N,N", help="freshness rates in states/s, simulated tracks "
                        "(default 1000,10000; --quick 100,1000; '' for none)")
    parser.add_argument("--recorded-rates", metavar="N,N", help="freshness rates on real recorded tracks (default "
                        "1000; --quick 100; '' for none)")
    parser.add_argument("--out", metavar="DIR", help="results directory")
    parser.add_argument("--work", metavar="DIR", help="scratch directory (default data/bench/work)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--no-readme", action="store_true", help="do not update the README section")
    parser.add_argument("--render", metavar="FILE", help="only re-render FILE's markdown and README section")


def run(args, settings) -> int:
    from bench.suite import run_suite

    return run_suite(args, settings)
