"""Hedged requests: when an entry is slow to show anything, start the next one alongside it.

`race` runs each item's event stream as a task. While no racer has produced output and
items remain, a timer of `hedge_after` seconds starts the next one (at most `max_hedges`
extra); a racer that ends without sending anything (its entry was skipped) is replaced by
the next item at once. The first output picks the winner: the other racers are cancelled at
once (`losing` is told first, so they are logged as hedged) and only the winner's events
pass on. For a whole answer there is no output before the end: the first complete answer
(`finished()`) wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
E = TypeVar("E")
_DONE = object()  # a racer's last message


@dataclass(frozen=True, slots=True)
class Rules(Generic[E]):
    """How a race reads its racers' events."""

    hedge_after: float
    max_hedges: int
    sleep: Callable[[float], Awaitable[None]]
    is_output: Callable[[E], bool]  # the first such event picks the winner
    is_request: Callable[[E], bool]  # the racer sent a request
    finished: Callable[[], bool]  # the run has its answer (or must stop)


class _Race(Generic[T, E]):
    def __init__(
        self,
        items: list[T],
        run: Callable[[T], AsyncGenerator[E, None]],
        rules: Rules[E],
        losing: Callable[[T], None],
    ) -> None:
        self.items = items
        self.run = run
        self.rules = rules
        self.losing = losing
        self.queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
        self.racers: dict[int, tuple[T, asyncio.Task[None]]] = {}
        self.ids = itertools.count()
        self.sent: set[int] = set()
        self.hedges = 0
        self.winner: int | None = None

    async def _consume(self, rid: int, item: T) -> None:
        try:
            async with aclosing(self.run(item)) as events:
                async for event in events:
                    await self.queue.put((rid, event))
        except Exception as exc:  # re-raised by the reader of the queue
            await self.queue.put((rid, exc))
            return
        await self.queue.put((rid, _DONE))

    def start(self) -> None:
        rid, item = next(self.ids), self.items.pop(0)
        self.racers[rid] = (item, asyncio.create_task(self._consume(rid, item)))

    async def cancel(self, keep: int | None = None, *, lost: bool = True) -> None:
        """Cancel every racer but `keep`; `lost`: they lost the race (else the run ended)."""
        losers = [(rid, item, task) for rid, (item, task) in self.racers.items() if rid != keep]
        for rid, item, task in losers:
            if lost:
                self.losing(item)
            task.cancel()
            del self.racers[rid]
        for _, _, task in losers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def hedging(self) -> bool:
        return self.winner is None and bool(self.items) and self.hedges < self.rules.max_hedges

    async def next_message(self) -> tuple[int, object] | None:
        """The next racer message, or None when the hedge timer ran out first."""
        getter = asyncio.create_task(self.queue.get())
        if not self.hedging:
            return await getter
        timer = asyncio.create_task(_sleeping(self.rules.sleep, self.rules.hedge_after))
        try:
            await asyncio.wait({getter, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    def ended(self, rid: int) -> bool:
        """A racer ended; True if the race is over."""
        del self.racers[rid]
        if self.rules.finished():
            return True
        if rid not in self.sent and self.racers and self.items and self.winner is None:
            self.start()  # it sent nothing: the next item takes its place
        return False

    async def events(self) -> AsyncGenerator[E, None]:
        self.start()
        try:
            while self.racers:
                message = await self.next_message()
                if message is None:  # nothing has come within hedge_after: start the next
                    self.hedges += 1
                    self.start()
                    continue
                rid, body = message
                if rid not in self.racers:
                    continue  # a loser's last words
                if isinstance(body, Exception):
                    await self.cancel(lost=False)
                    raise body
                if body is _DONE:
                    if self.ended(rid):
                        await self.cancel()
                        return
                    continue
                event: E = body  # type: ignore[assignment]
                if self.rules.is_request(event):
                    self.sent.add(rid)
                if self.winner is None and self.rules.is_output(event):
                    self.winner = rid
                    await self.cancel(keep=rid)
                yield event
        finally:
            await self.cancel(lost=False)


def race(
    items: list[T],
    run: Callable[[T], AsyncGenerator[E, None]],
    rules: Rules[E],
    losing: Callable[[T], None],
) -> AsyncGenerator[E, None]:
    """The events of racers started from the front of `items` (consumed as they start),
    until one finishes the run or all have ended."""
    return _Race(items, run, rules, losing).events()


async def _sleeping(sleep: Callable[[float], Awaitable[None]], seconds: float) -> None:
    await sleep(seconds)
