"""Breakers on Redis, shared by every host that points at the same server.

Each entry is a hash `PREFIX:breaker:KEY` (cooldown_until, failures, reason, updated_at, as
epoch seconds) listed in the set `PREFIX:breakers`; its probe lease is the string
`PREFIX:probe:KEY` = `OWNER|UNTIL`. The claim is one Lua script: it checks the breaker is
half-open and no unexpired lease exists, then `SET ... PX lease`, so the key also vanishes by
itself if its holder dies. Release is a compare-and-delete script; a failure is an optimistic
WATCH/MULTI transaction (the cooldown depends on the level it reads). Reading a cascade's
breakers is one pipelined round trip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import redis
from redis.exceptions import RedisError, WatchError

from ..config import StateConfig, safe_url
from ..store import LATEST_INSTANT, EntryState, Failure
from .base import BackendError

_CLAIM = """
local f = redis.call('HMGET', KEYS[1], 'cooldown_until', 'failures')
local now = tonumber(ARGV[1])
local failures = tonumber(f[2] or '0') or 0
local cooling = f[1] and tonumber(f[1]) > now
if failures <= 0 or cooling then return 0 end
local held = redis.call('GET', KEYS[2])
if held then
  local lapses = tonumber(string.match(held, '|(.*)$') or '0') or 0
  if lapses > now then return 0 end
end
redis.call('SET', KEYS[2], ARGV[2] .. '|' .. ARGV[3], 'PX', ARGV[4])
return 1
"""

_RELEASE = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_RESET = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local f = redis.call('HMGET', KEYS[1], 'updated_at', 'failures', 'reason', 'cooldown_until')
local sent, now = tonumber(ARGV[1]), tonumber(ARGV[2])
if f[1] and tonumber(f[1]) > sent then return 0 end
local probing = redis.call('EXISTS', KEYS[2]) == 1
local cooling = f[4] and tonumber(f[4]) > now
if not ((tonumber(f[2] or '0') or 0) > 0 or probing or f[3] or cooling) then return 0 end
redis.call('HSET', KEYS[1], 'failures', 0, 'updated_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'reason')
if cooling then redis.call('HSET', KEYS[1], 'cooldown_until', ARGV[2]) end
redis.call('DEL', KEYS[2])
return 1
"""

_FIELDS = ("cooldown_until", "failures", "reason")


class RedisBreakers:
    """The `Breakers` of one Redis server (redis-py's client, its timeouts on every call)."""

    def __init__(self, config: StateConfig, password: str | None = None) -> None:
        assert config.url is not None
        self.where = safe_url(config.url)
        self.prefix = config.prefix
        try:
            self.client: redis.Redis = redis.Redis.from_url(
                config.url,
                socket_timeout=config.timeout_s,
                socket_connect_timeout=config.timeout_s,
                retry_on_timeout=False,
                decode_responses=True,
                **({"password": password} if password else {}),
            )
        except (ValueError, RedisError) as exc:
            raise BackendError(f"Redis at {self.where}: {exc}") from None
        self._claim = self.client.register_script(_CLAIM)
        self._release = self.client.register_script(_RELEASE)
        self._reset = self.client.register_script(_RESET)

    def _hash(self, key: str) -> str:
        return f"{self.prefix}:breaker:{key}"

    def _probe(self, key: str) -> str:
        return f"{self.prefix}:probe:{key}"

    def _call(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except RedisError as exc:
            raise BackendError(f"Redis at {self.where}: {exc}") from None

    def ping(self) -> None:
        self._call(self.client.ping)

    # --- reads ---------------------------------------------------------------------------

    def states(self, keys: Iterable[str]) -> dict[str, EntryState]:
        wanted = list(dict.fromkeys(keys))
        return {s.key: s for s in self._read(wanted)}

    def all_states(self) -> list[EntryState]:
        keys = self._call(lambda: self.client.smembers(f"{self.prefix}:breakers"))
        return self._read(sorted(keys))

    def _read(self, keys: list[str]) -> list[EntryState]:
        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._hash(key), _FIELDS)
                pipe.get(self._probe(key))
            return pipe.execute()

        replies = self._call(read) if keys else []
        return [_state(key, replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(keys)]

    # --- writes --------------------------------------------------------------------------

    def claim_probe(self, key: str, owner: str, now: float, lease_s: float) -> bool:
        until = min(now + lease_s, LATEST_INSTANT)
        lease_ms = max(1, math.ceil(lease_s * 1000))
        args: list[str | int] = [repr(now), owner, repr(until), lease_ms]
        keys = [self._hash(key), self._probe(key)]
        return bool(self._call(lambda: self._claim(keys=keys, args=args)))

    def release_probe(self, key: str, owner: str) -> None:
        self._call(lambda: self._release(keys=[self._probe(key)], args=[owner]))

    def reset_breaker(self, key: str, sent: float, now: float) -> None:
        keys = [self._hash(key), self._probe(key)]
        self._call(lambda: self._reset(keys=keys, args=[repr(sent), repr(now)]))

    def fail_breaker(self, failure: Failure) -> tuple[float | None, int]:
        key, now, rule, owner = failure.key, failure.now, failure.rule, failure.owner
        name = self._hash(key)

        def fail() -> tuple[float | None, int]:
            with self.client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(name)  # type: ignore[no-untyped-call]
                        existing, failures = pipe.hmget(name, ["cooldown_until", "failures"])
                        level = int(failures or 0) + 1
                        seconds = failure.cooldown_for(level)
                        if seconds is None:
                            pipe.unwatch()
                            if owner is not None:
                                self._release(keys=[self._probe(key)], args=[owner])
                            return None, level
                        until = min(max(now + seconds, float(existing or 0)), LATEST_INSTANT)
                        pipe.multi()
                        pipe.hset(
                            name,
                            mapping={
                                "cooldown_until": repr(until),
                                "failures": level,
                                "updated_at": repr(now),
                            },
                        )
                        if rule is None:
                            pipe.hdel(name, "reason")
                        else:
                            pipe.hset(name, "reason", rule)
                        pipe.delete(self._probe(key))
                        pipe.sadd(f"{self.prefix}:breakers", key)
                        pipe.execute()
                        return until, level
                    except WatchError:
                        continue  # another process wrote this breaker meanwhile: read again

        result: tuple[float | None, int] = self._call(fail)
        return result

    def clear_cooldowns(self, keys: Iterable[str] | None = None) -> int:
        index = f"{self.prefix}:breakers"

        def clear() -> int:
            wanted = sorted(map(str, self.client.smembers(index))) if keys is None else list(keys)
            if not wanted:
                return 0
            pipe = self.client.pipeline()
            pipe.delete(*[self._hash(k) for k in wanted])
            pipe.delete(*[self._probe(k) for k in wanted])
            pipe.srem(index, *wanted)
            removed: int = pipe.execute()[0]
            return removed

        result: int = self._call(clear)
        return result

    def put_states(self, states: Iterable[EntryState]) -> int:
        chosen = list(states)

        def put() -> int:
            pipe = self.client.pipeline()
            for s in chosen:
                until = repr(s.cooldown_until or 0.0)
                pipe.hset(
                    self._hash(s.key), mapping={"failures": s.failures, "cooldown_until": until}
                )
                if s.reason is None:
                    pipe.hdel(self._hash(s.key), "reason")
                else:
                    pipe.hset(self._hash(s.key), "reason", s.reason)
                pipe.sadd(f"{self.prefix}:breakers", s.key)
            pipe.execute()
            return len(chosen)

        result: int = self._call(put)
        return result

    def close(self) -> None:
        self.client.close()


def _state(key: str, fields: list[str | None], probe: str | None) -> EntryState:
    until, failures, reason = fields
    lease = float(probe.rpartition("|")[2]) if probe else None
    return EntryState(key, float(until) if until else None, int(failures or 0), lease, reason)
