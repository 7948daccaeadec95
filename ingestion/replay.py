"""Replay files: one OpenSky ``/states/all`` response object per line, plain or gzip.

``read_replay(paths)`` yields the responses of one or more files in order (gzip is recognised
by its magic bytes, whatever the file name). A line that is not a valid response (a capture cut
off mid-line, a corrupt line) is counted in ``ReplayStats``, logged with its file and line
number, and skipped: it never stops the replay and is never silently lost.

``ReplayWriter(path)`` appends responses in the same format (gzip when the name ends in
``.gz``); each line is flushed on its own so an interrupted recording stays readable.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ingestion.states import MalformedResponse, check_response

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class ReplayStats:
    responses: int = 0
    states: int = 0
    malformed: int = 0
    malformed_where: list[str] = field(default_factory=list)


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_replay(paths: str | os.PathLike | Iterable[str | os.PathLike],
                stats: ReplayStats | None = None) -> Iterator[dict]:
    """Yield each response (``{"time": ..., "states": [...] | null}``) of ``paths`` in order.

    Malformed lines are skipped, counted in ``stats`` (when given) and logged as warnings.
    A truncated gzip stream ends the file with a warning (what was readable is yielded).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    stats = stats if stats is not None else ReplayStats()
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"replay file not found: {path}")
        with _open_text(path) as lines:
            number = 0
            while True:
                try:
                    line = lines.readline()
                except (EOFError, OSError, UnicodeDecodeError) as exc:
                    stats.malformed += 1
                    stats.malformed_where.append(f"{path}:{number + 1}")
                    log.warning("replay %s: unreadable after line %d (%s); rest of file skipped",
                                path, number, exc)
                    break
                if not line:
                    break
                number += 1
                if not line.strip():
                    continue
                try:
                    response = json.loads(line)
                    check_response(response)
                except (ValueError, MalformedResponse) as exc:
                    stats.malformed += 1
                    stats.malformed_where.append(f"{path}:{number}")
                    log.warning("replay %s line %d: malformed response skipped (%s)", path, number,
                                str(exc)[:200])
                    continue
                stats.responses += 1
                stats.states += len(response.get("states") or ())
                yield response


def count_states(paths) -> int:
    """Number of states in replay files (what a replay of them puts in Kafka)."""
    return sum(len(r.get("states") or ()) for r in read_replay(paths))


class ReplayWriter:
    """Append responses to a replay file, one JSON line each (gzip if the name ends in .gz)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix == ".gz":
            # Appending adds a gzip member; readers see one continuous stream.
            self._fh = io.TextIOWrapper(gzip.open(self.path, "ab"), encoding="utf-8")
        else:
            self._fh = open(self.path, "a", encoding="utf-8")
        self.responses = 0

    def write(self, response: dict) -> None:
        self._fh.write(json.dumps(response, separators=(",", ":")) + "\n")
        self._fh.flush()
        self.responses += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ReplayWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
