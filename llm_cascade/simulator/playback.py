"""Play a vendor's stream onto a connection, at the scripted pace, with the scripted faults.

Every wait watches the client's socket: a client that closes its end while the simulator
waits (a delay, a stall, a held reply, a hang) or whose next write fails is recorded as gone.
A client that leaves while the rest of a stream still fits the socket buffers goes unnoticed,
so tests of cancellation stall or slow the stream.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from io import BufferedIOBase

from .behaviours import FAULTS, Stream
from .wire import OVERSIZED, Event, Framing, StreamParts, cut, words

POLL = 0.05  # seconds between looks at the stop and release events while waiting


def pieces(text: str, options: Stream) -> list[str]:
    """The text pieces a stream carries: as given, cut in `chunks`, or one per word; with the
    oversized piece, if scripted, after `oversized_after` of them."""
    if options.pieces is not None:
        out = list(options.pieces)
    elif options.chunks is not None:
        out = cut(text, options.chunks)
    else:
        out = words(text)
    if options.oversized_after is not None:
        out.insert(min(options.oversized_after, len(out)), "x" * OVERSIZED)
    return out


class ClientGone(Exception):
    """The client closed its end (or reset it) before the response was complete."""


class Stopped(Exception):
    """The simulator is stopping: drop the connection."""


class Connection:
    """The socket of one response: chunked writes, and waits that notice the client leaving."""

    def __init__(
        self,
        sock: socket.socket,
        out: BufferedIOBase,
        stopping: threading.Event,
        released: threading.Event,
    ) -> None:
        self.sock = sock
        self.out = out
        self.stopping = stopping
        self.released = released

    def write(self, data: bytes) -> None:
        """One chunk of a chunked body."""
        if not data:
            return
        try:
            self.out.write(b"%X\r\n%s\r\n" % (len(data), data))
        except OSError as exc:  # a reset, a broken pipe, or a client that stopped reading
            raise ClientGone from exc

    def finish(self) -> None:
        """The last chunk: the body is complete."""
        try:
            self.out.write(b"0\r\n\r\n")
        except OSError as exc:
            raise ClientGone from exc

    def drop(self) -> None:
        with contextlib.suppress(OSError):  # already gone
            self.sock.shutdown(socket.SHUT_RDWR)

    def wait(
        self,
        seconds: float | None,
        *,
        until_released: bool = False,
        every: float | None = None,
        tick: Callable[[], None] | None = None,
    ) -> None:
        """Wait `seconds` (None: until released or stopped), calling `tick` every `every`
        seconds. Every tick scheduled before the end is made, late if this thread was late, so
        a wait as long as `every` always holds one. Raises Stopped or ClientGone."""
        start = time.monotonic()
        ticks = 0
        while True:
            if self.stopping.is_set():
                raise Stopped
            if until_released and self.released.is_set():
                return
            elapsed = time.monotonic() - start
            if tick is not None and every is not None:
                due = every * (ticks + 1)
                if elapsed >= due and (seconds is None or due < seconds):
                    tick()
                    ticks += 1
                    continue
            if seconds is not None and elapsed >= seconds:
                return
            pause = POLL
            if seconds is not None:
                pause = min(pause, seconds - elapsed)
            if tick is not None and every is not None:
                pause = min(pause, max(0.0, every * (ticks + 1) - elapsed))
            if self._client_left(pause):
                raise ClientGone

    def _client_left(self, timeout: float) -> bool:
        """Whether the client closed its end, watching the socket for up to `timeout`."""
        try:
            readable, _, _ = select.select([self.sock], [], [], timeout)
            if not readable:
                return False
            if self.sock.recv(1, socket.MSG_PEEK) == b"":
                return True
        except OSError:  # reset by the peer, or closed under us by stop()
            return True
        # The client sent more (a pipelined request): it is still there. Do not spin on it.
        self.stopping.wait(max(timeout, 0.01))
        return False


class Player:
    """Sends one stream: the head, the body at its pace with its faults, then the tail."""

    def __init__(
        self,
        conn: Connection,
        framing: Framing,
        options: Stream,
        *,
        keepalive: Event | None,
        error: Event,
        malformed: Event,
    ) -> None:
        self.conn = conn
        self.framing = framing
        self.options = options
        self.keepalive = framing.event(keepalive) if keepalive else framing.comment()
        self.error = error
        self.malformed = malformed
        self.fired: set[str] = set()

    def play(self, parts: StreamParts) -> None:
        """Raises ClientGone or Stopped if the stream cannot be played to its end."""
        for event in parts.head:
            self._send(event)
        sent = 0
        for event in parts.body:
            if event.content:
                if self._faults(sent):
                    return
                self._pause(self.options.chunk_delay if sent else self.options.first_token_delay)
                sent += 1
            self._send(event)
        if self._faults(sent, at_end=True):
            return
        for event in parts.tail:
            self._send(event)
        self._end()

    def _send(self, event: Event) -> None:
        self.conn.write(self.framing.event(event))

    def _end(self) -> None:
        self.conn.write(self.framing.close())
        self.conn.finish()

    def _pause(self, seconds: float, *, until_released: bool = False) -> None:
        if seconds or until_released:
            self.conn.wait(
                None if until_released else seconds,
                until_released=until_released,
                every=self.options.keepalive_every,
                tick=lambda: self.conn.write(self.keepalive),
            )

    def _faults(self, sent: int, *, at_end: bool = False) -> bool:
        """Fire the faults due after `sent` content events (at the end of the body: all those
        not fired yet), in order; True if one ended the stream."""
        for name in FAULTS:
            count = getattr(self.options, name)
            due = count is not None and (count == sent or (at_end and count >= sent))
            if not due or name in self.fired:
                continue
            self.fired.add(name)
            if name == "malformed_after":
                self._send(self.malformed)
            elif name == "stall_after":
                self._pause(0, until_released=True)
            elif name == "error_after":
                self._send(self.error)
                self._end()
                return True
            else:  # drop_after
                self.conn.drop()
                return True
        return False

    def error_only(self) -> None:
        """A stream that is nothing but the error event (`ErrorEvent` on a streaming request)."""
        self._send(self.error)
        self._end()
