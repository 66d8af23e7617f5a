"""Where `stats`, `metrics` and `top` read the attempt log's aggregates: this host's SQLite
(`rollup.py`) or, with `[log] backend = "postgres"`, the fleet's (`fleetlog.py`). One
interface, so each view has one renderer for both sources.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import rollup
from .config import AppConfig
from .store import Store

if TYPE_CHECKING:
    from .fleetlog import FleetLogReader

HistogramKey = tuple[str, str, str, str]  # cascade, entry, metric, error type


class LogSource(Protocol):
    """The aggregates of an attempt log, as `rollup`'s readers define them."""

    def counts(
        self, since_hour: str | None = None, cascade: str | None = None
    ) -> list[rollup.Counts]: ...

    def histograms(
        self, since_hour: str | None = None, cascade: str | None = None
    ) -> dict[HistogramKey, rollup.Histogram]: ...

    def latest_errors(self) -> dict[str, rollup.LatestError]: ...

    def cascades_seen(self) -> set[str]: ...


@dataclass(frozen=True, slots=True)
class LocalLog:
    """This host's log; without a database yet (`conn` None), an empty one."""

    conn: sqlite3.Connection | None

    def counts(
        self, since_hour: str | None = None, cascade: str | None = None
    ) -> list[rollup.Counts]:
        return [] if self.conn is None else rollup.counts(self.conn, since_hour, cascade)

    def histograms(
        self, since_hour: str | None = None, cascade: str | None = None
    ) -> dict[HistogramKey, rollup.Histogram]:
        return {} if self.conn is None else rollup.histograms(self.conn, since_hour, cascade)

    def latest_errors(self) -> dict[str, rollup.LatestError]:
        return {} if self.conn is None else rollup.latest_errors(self.conn)

    def cascades_seen(self) -> set[str]:
        return set() if self.conn is None else rollup.cascades_seen(self.conn)


@contextmanager
def log_source(
    config: AppConfig, store: Store | None, *, local: bool = False
) -> Iterator[LogSource]:
    """The fleet's log when `[log]` puts it on PostgreSQL (unless `local`), else `store`'s.
    Reading the fleet's raises BackendError when PostgreSQL cannot be used."""
    if config.log.server is None or local:
        if store is not None:
            store.fold_log()  # the rows logged since the last fold count too
        yield LocalLog(None if store is None else store.conn)
        return
    with fleet_log(config) as reader:
        yield reader


@contextmanager
def fleet_log(config: AppConfig) -> Iterator[FleetLogReader]:
    """The fleet's log `[log]` puts on PostgreSQL (it must). Raises BackendError when
    PostgreSQL cannot be used."""
    from .fleetlog import FleetLogReader

    assert config.log.server is not None
    reader = FleetLogReader(config.log.server)
    try:
        yield reader
    finally:
        reader.close()


def reads_fleet(config: AppConfig, local: bool) -> bool:
    return config.log.server is not None and not local
