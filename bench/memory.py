"""Peak resident memory of process trees, sampled from ``/proc`` (Linux).

``MemorySampler`` polls every ``interval_s`` in a thread: for each named root pid it sums the
resident set (RSS) over the root and all its descendants (the python driver, the JVM it
started, the forked pyspark workers), and keeps the highest sum: ``peak_rss_mb``. RSS counts a page shared
by forked workers once per process, so ``peak_pss_mb`` sums the proportional set size
(``/proc/<pid>/smaps_rollup``: each shared page split between its users) as well: the memory
the tree really occupies. A spike shorter than the interval can be missed.

A process that shares its parent's address space is not counted again: the JVM starts a command
(``getconf``, ``rm``) through ``posix_spawn``, whose child runs in the JVM's own memory until it
executes the command, and ``/proc`` shows it with the JVM's RSS and PSS. A sample that caught one
counted a 2.7 GB JVM twice (``bench/results/20261206T085434``: `run all` 5.9 GB at 1,000 states/s).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

# kcmp(2) by architecture, and its KCMP_VM type: do two processes share one address space?
_KCMP_SYSCALL = {"x86_64": 312, "aarch64": 272}
_KCMP_VM = 1
_LIBC = None


def same_address_space(a: int, b: int) -> bool | None:
    """Whether processes ``a`` and ``b`` share one address space (``kcmp`` with ``KCMP_VM``);
    None when the kernel cannot say (no ``kcmp`` here, not permitted, a process gone)."""
    global _LIBC
    number = _KCMP_SYSCALL.get(platform.machine())
    if number is None:
        return None
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    result = _LIBC.syscall(number, a, b, _KCMP_VM, 0, 0)
    return None if result < 0 else result == 0


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _command(pid: int) -> str:
    """Program and, for python, its module (``java``, ``python -m pyspark.daemon``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not args:
        return "?"
    prog = os.path.basename(args[0])
    if prog.startswith("python") and "-m" in args[:-1]:
        return f"python -m {args[args.index('-m') + 1]}"
    return prog


def _rss_pss_kb(pid: int) -> tuple[int, int]:
    """RSS and PSS of one process from a single ``smaps_rollup`` walk, so that PSS <= RSS.

    Reading ``VmRSS`` from ``status`` and ``Pss`` from ``smaps_rollup`` one after the other lets a
    growing process show more PSS than RSS; falls back to ``VmRSS`` (PSS 0) when the rollup is
    not readable (kernel before 4.14, or another user's process).
    """
    rss = pss = None
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    if rss is None:
        return _status_kb(pid, "VmRSS"), 0
    return rss, pss or 0


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name (field 2) may hold spaces: the ppid follows the closing parenthesis
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


class MemorySampler:
    """Track named process trees; ``peaks()`` -> ``{name: {"peak_rss_mb", "peak_pss_mb", ...}}``."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self._roots: dict[str, int] = {}
        self._peak: dict[str, dict[str, float]] = {}
        self._largest: dict[str, dict[str, float]] = {}  # tree -> "command (pid)" -> peak RSS kB
        self._samples: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def track(self, name: str, pid: int | None) -> None:
        if pid:
            with self._lock:
                self._roots[name] = pid

    def untrack(self, name: str) -> None:
        self.sample()  # last look before the process goes
        with self._lock:
            self._roots.pop(name, None)

    def sample(self) -> None:
        kids = _children_map()
        with self._lock:
            roots = dict(self._roots)
        parents = {child: parent for parent, children in kids.items() for child in children}
        for name, root in roots.items():
            members = [p for p in tree(root, kids)
                       if p == root or not same_address_space(p, parents[p])]  # see the module docstring
            per = {p: _rss_pss_kb(p) for p in members}
            rss = sum(r for r, _ in per.values())
            if rss == 0:
                continue
            pss = sum(q for _, q in per.values())
            with self._lock:
                peak = self._peak.setdefault(name, {"rss": 0, "pss": 0, "processes": 0})
                peak["rss"] = max(peak["rss"], rss)
                peak["pss"] = max(peak["pss"], pss)
                peak["processes"] = max(peak["processes"], sum(r > 0 for r, _ in per.values()))
                self._samples[name] = self._samples.get(name, 0) + 1
                largest = self._largest.setdefault(name, {})
                for p, (r, _) in per.items():
                    if r:  # the command read now: a pid that exec'd (bash -> java) shows what runs
                        key = f"{_command(p)} ({p})"
                        largest[key] = max(largest.get(key, 0), r)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._loop, name="bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def peaks(self) -> dict[str, dict]:
        with self._lock:
            return {
                name: {"peak_rss_mb": p["rss"] / 1024, "peak_pss_mb": p["pss"] / 1024,
                       "max_processes": int(p["processes"]), "samples": self._samples[name],
                       "largest": [{"process": k, "peak_rss_mb": kb / 1024}
                                   for k, kb in sorted(self._largest[name].items(), key=lambda x: -x[1])[:4]]}
                for name, p in self._peak.items()
            }
