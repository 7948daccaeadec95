"""Peak resident memory of process trees, sampled from ``/proc`` (Linux).

``MemorySampler`` polls every ``interval_s`` in a thread: for each named root pid it sums
``VmRSS`` over the root and all its descendants (the python driver and the JVM it started), and
keeps the highest sum. Each process's own kernel-tracked peak (``VmHWM``) is read as well, so a
spike between two samples is not missed: ``peak_hwm_mb`` sums the per-process peaks (an upper
bound, as the processes need not peak together), ``peak_rss_mb`` is the highest sampled sum.
"""

from __future__ import annotations

import os
import threading
import time


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
    """Track named process trees; ``peaks()`` -> ``{name: {"peak_rss_mb", "peak_hwm_mb", ...}}``."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self._roots: dict[str, int] = {}
        self._peak: dict[str, float] = {}
        self._hwm: dict[str, dict[int, int]] = {}
        self._samples: dict[str, int] = {}
        self._comm: dict[int, str] = {}
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
        for name, root in roots.items():
            pids = tree(root, kids)
            rss = sum(_status_kb(p, "VmRSS") for p in pids)
            if rss == 0:
                continue
            with self._lock:
                self._peak[name] = max(self._peak.get(name, 0), rss)
                self._samples[name] = self._samples.get(name, 0) + 1
                hwm = self._hwm.setdefault(name, {})
                for p in pids:
                    hwm[p] = max(hwm.get(p, 0), _status_kb(p, "VmHWM"))
                    if p not in self._comm:
                        self._comm[p] = _command(p)

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
                name: {"peak_rss_mb": self._peak[name] / 1024, "peak_hwm_mb": sum(self._hwm[name].values()) / 1024,
                       "processes": len(self._hwm[name]), "samples": self._samples[name],
                       "largest": [{"command": self._comm.get(p, "?"), "peak_hwm_mb": kb / 1024}
                                   for p, kb in sorted(self._hwm[name].items(), key=lambda x: -x[1])[:4]]}
                for name in self._peak
            }

    def reset(self) -> None:
        with self._lock:
            self._peak.clear()
            self._hwm.clear()
            self._samples.clear()


def now_ms() -> int:
    return int(time.time() * 1000)
