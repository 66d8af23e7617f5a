"""Time: the injectable clock and the one timestamp format written to SQLite.

Cooldowns are wall-clock instants (they are shared between processes); latencies use a
monotonic clock. Tests pass a `ManualClock` so nothing ever sleeps for real.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Where the engine reads the time and how it waits."""

    def now(self) -> float:
        """Wall-clock time, seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """A clock for measuring durations."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait; a manual clock just advances."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        import asyncio  # not at module level: commands that only format times stay fast

        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to: `advance()` or an awaited `sleep()`."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._mono = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        import asyncio

        self.slept.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)  # still yield to the event loop, as a real sleep would


def format_ts(epoch: float) -> str:
    """UTC RFC 3339 with exactly six fractional digits and `+00:00`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def parse_ts(text: str) -> float | None:
    """Parse any RFC 3339 timestamp (the original writes 0/3/6/9 digits); None if unreadable."""
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in value:
        # Python reads at most 6 fractional digits; the original may write 9.
        head, _, rest = value.partition(".")
        offset = rest.lstrip("0123456789")  # the digits of the fraction end at the offset
        digits = rest[: len(rest) - len(offset)]
        value = f"{head}.{digits[:6].ljust(6, '0')}{offset}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def json_time(value: float | str | None) -> str | None:
    """An instant as every JSON output writes it: RFC 3339 UTC (`format_ts`), from an epoch or
    from any timestamp text a database or saved prompt holds (the original's forms included).
    Text that is no timestamp is kept as it is; None stays None."""
    if value is None or isinstance(value, bool):
        return None
    epoch = parse_ts(value) if isinstance(value, str) else value
    if epoch is None:
        return str(value)
    try:
        return format_ts(epoch)
    except (OverflowError, OSError, ValueError):  # a number no calendar has (a hand-edited file)
        return str(value)


def format_human(epoch: float) -> str:
    """A readable UTC instant for messages: `2026-01-01 12:04:31Z`."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")
