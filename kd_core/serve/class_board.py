"""The class board's store: a class's finished runs as anonymous points, kept in one SQLite file.

A teacher picks a class code (`settings.check_class_code`: 3 to 32 characters of a-z, 0-9 and -) and shares
the link `/?class=CODE`; every finished run of a visitor in that class adds a `Point` (T, α, methods, seeds,
KD − CE with its 95 % interval, KD's wins): no name, no address, no session, nothing that tells who ran it.
A run's points are keyed by its settings (`run_key`), so a run that several classmates shared or replayed is one
point. Points older than `TTL_S` are not shown and are deleted at the next write. The file is
`$KD_CLASS_BOARD_DB`, else `class_board.sqlite` in the data folder (`$KD_DATA_DIR` or `./data`), so a restart keeps
the class. How many classmates are training now is counted in this process only (a restart has none training).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from kd_core.data.datasets import data_root
from kd_core.serve.settings import check_class_code

TTL_S = 24 * 3600  # a point's lifetime: a lesson's day
PATH_VARIABLE = "KD_CLASS_BOARD_DB"
SCHEMA = """CREATE TABLE IF NOT EXISTS points (
    class TEXT NOT NULL, run_key TEXT NOT NULL, created REAL NOT NULL,
    T REAL NOT NULL, alpha REAL NOT NULL, methods TEXT NOT NULL, seeds INTEGER NOT NULL,
    kd_minus_ce REAL NOT NULL, ci_low REAL, ci_high REAL, kd_wins INTEGER NOT NULL,
    PRIMARY KEY (class, run_key));
CREATE INDEX IF NOT EXISTS points_created ON points (created);"""


@dataclasses.dataclass(frozen=True)
class Point:
    """One finished run of a class: accuracies' differences as fractions, as in the CLI's JSON."""

    T: float
    alpha: float
    methods: tuple[str, ...]
    seeds: int  # seeds the run trained (its repeats)
    kd_minus_ce: float  # mean over the seeds of KD's test accuracy − CE's (the first method's, as the verdict)
    ci95: tuple[float, float] | None  # its 95 % interval; None for a single seed
    kd_wins: int  # seeds where KD beat CE

    def row(self) -> dict:
        """The point as /class_board returns it."""
        return {"T": self.T, "alpha": self.alpha, "methods": list(self.methods), "seeds": self.seeds,
                "kd_minus_ce": self.kd_minus_ce, "ci95": None if self.ci95 is None else list(self.ci95),
                "kd_wins": self.kd_wins}


def point_of(summary: dict) -> Point:
    """A run's point, from its `RunResult.summary()` (the CLI's JSON)."""
    config, difference = summary["config"], summary["kd_minus_ce"]
    ci95 = difference["ci95"]
    return Point(float(config["temperature"]), float(config["alpha"]), tuple(config["methods"]),
                 int(summary["repeats"]), float(difference["mean"]),
                 None if ci95 is None else (float(ci95[0]), float(ci95[1])), int(summary["kd_wins"]))


def run_key(summary: dict) -> str:
    """What makes two runs the same run: every setting, seeds included (a shared or replayed run is one)."""
    settings = json.dumps(summary["config"], sort_keys=True, default=str)
    return hashlib.sha256(settings.encode()).hexdigest()[:32]


def default_path() -> Path:
    return Path(os.environ.get(PATH_VARIABLE) or data_root() / "class_board.sqlite")


class ClassBoard:
    """The points of every class, in the SQLite file at `path`; safe to call from any thread.

    `clock`: seconds since the epoch (tests pass another to age the points)."""

    def __init__(self, path: Path | str | None = None, clock: Callable[[], float] = time.time,
                 ttl_s: float = TTL_S) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.clock, self.ttl_s = clock, ttl_s
        self._lock = threading.Lock()  # one connection, one writer or reader at a time: a board is a few rows
        self._connection: sqlite3.Connection | None = None
        self._training: Counter[str] = Counter()

    def _db(self) -> sqlite3.Connection:
        """The connection, opened (and the file made) at first use: importing or building the app writes nothing."""
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._connection.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer's file lock
            self._connection.executescript(SCHEMA)
        return self._connection

    def add(self, code: str, summary: dict) -> Point:
        """Add a class member's finished run (its summary) to class `code`'s board; deletes expired points."""
        check_class_code(code)
        point, now = point_of(summary), self.clock()
        low, high = point.ci95 if point.ci95 is not None else (None, None)
        with self._lock:
            db = self._db()
            db.execute("DELETE FROM points WHERE created < ?", (now - self.ttl_s,))
            db.execute("INSERT OR IGNORE INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (code, run_key(summary), now, point.T, point.alpha, ",".join(point.methods), point.seeds,
                        point.kd_minus_ce, low, high, point.kd_wins))
        return point

    def points(self, code: str) -> list[Point]:
        """Class `code`'s points of the last `ttl_s`, oldest first."""
        check_class_code(code)
        with self._lock:
            rows = self._db().execute(
                "SELECT T, alpha, methods, seeds, kd_minus_ce, ci_low, ci_high, kd_wins FROM points "
                "WHERE class = ? AND created >= ? ORDER BY created, rowid", (code, self.clock() - self.ttl_s)
            ).fetchall()
        return [Point(T, alpha, tuple(methods.split(",")), seeds, gain, None if low is None else (low, high), wins)
                for T, alpha, methods, seeds, gain, low, high, wins in rows]

    @contextlib.contextmanager
    def training(self, code: str) -> Iterator[None]:
        """Count one classmate training in class `code` while the block runs ("" : no class, nothing counted)."""
        if code:
            check_class_code(code)
            with self._lock:
                self._training[code] += 1
        try:
            yield
        finally:
            if code:
                with self._lock:
                    self._training[code] -= 1
                    if not self._training[code]:
                        del self._training[code]

    def training_now(self, code: str) -> int:
        with self._lock:
            return self._training[code]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
