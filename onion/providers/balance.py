"""Load balancing and outlier ejection across the deployments of one model.

The router's book of deployment health. A model may be served by several deployments
(providers: keys, regions, replicas), each with a ``weight``. For each call the router
asks ``HealthTable.pick`` for one, reports the start and the verdict of the attempt,
and the table ejects deployments that keep failing, as Envoy's outlier detection does.

Picking: **weighted least-request** (Envoy's ``LEAST_REQUEST`` formula): a deployment is
drawn at random with probability proportional to ``weight / (in_flight + 1) ** bias``
(``in_flight_bias``, default 1). With no calls in flight this is plain weighted random,
so the configured weights hold exactly; a deployment that answers slowly piles up calls
in flight and is drawn less, so latency steers load without a latency model. ``bias = 0``
is plain weighted random.

Ejection: ``consecutive_failures`` failures in a row (errors: 5xx, 429, connection
errors; timeouts and stalls; streams cut mid-way) eject a deployment for
``base_ejection_seconds * n`` (``n``: how many times it was ejected, capped at
``max_ejection_seconds``; the count starts again after a healthy spell of
``max_ejection_seconds``). At most ``max_ejection_percent`` of a model's deployments are
ejected at once, and never all of them: one is always left to serve. When the ejection
time is over the deployment is *probing*: one call at a time goes to it; its success
returns it to the pool, its failure ejects it again at once (for longer). A client that
cancels, a caller's own 4xx and an open circuit are no verdict.

If every candidate is ejected anyway (the percent rule is per model, a deployment may
serve several; or another worker's data says so), the table still picks the one whose
ejection ends soonest ("panic", as Envoy): an ejected deployment is never preferred to
a healthy one, and a model is never left with nothing.

Shared state: with a ``RedisClient`` (``SharedHealth``), calls in flight, failures in a
row and ejections are shared by every worker and machine. Each worker publishes its own
calls in flight and reads everyone's at most every ``refresh_seconds`` (so the others'
counts are that stale); failures and ejections are written when they happen. A healthy
call costs Redis nothing. Every Redis operation has the client's short deadline and
breaker; when Redis fails, the local book decides.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import msgspec

from .._redis import RedisClient
from ..errors import ConfigError

__all__ = ["DeploymentState", "EjectionPolicy", "HealthTable", "SharedHealth", "Verdict"]

Verdict = Literal["ok", "failed", "none"]
"""How an attempt ended for a deployment's health: answered, failed, or no verdict."""


class EjectionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When a deployment is ejected, for how long, and how calls are spread.

    Defaults: 5 failures in a row eject for 30 s times ejections (at most 300 s), at most
    50 % of a model's deployments ejected at once (never all), least-request bias 1.
    """

    consecutive_failures: int = 5
    base_ejection_seconds: float = 30.0
    max_ejection_seconds: float = 300.0
    max_ejection_percent: float = 50.0
    in_flight_bias: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.consecutive_failures, int) or self.consecutive_failures < 1:
            raise ConfigError("field 'consecutive_failures': must be an integer >= 1", field="consecutive_failures")
        for field in ("base_ejection_seconds", "max_ejection_seconds"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"field {field!r}: must be a number > 0", field=field)
        if self.max_ejection_seconds < self.base_ejection_seconds:
            raise ConfigError(
                "field 'max_ejection_seconds': must be >= base_ejection_seconds", field="max_ejection_seconds"
            )
        if not 0 <= self.max_ejection_percent <= 100:
            raise ConfigError("field 'max_ejection_percent': must be 0-100", field="max_ejection_percent")
        if not (math.isfinite(self.in_flight_bias) and self.in_flight_bias >= 0):
            raise ConfigError("field 'in_flight_bias': must be a number >= 0", field="in_flight_bias")


class DeploymentState(msgspec.Struct, frozen=True):
    """What the table knows of one deployment right now (a copy).

    ``status``: ``healthy``, ``ejected`` (until ``ejected_until``) or ``probing`` (the
    ejection time is over; one call at a time tries it). ``in_flight`` counts this
    process's calls plus, with Redis, the other workers' (``remote_in_flight``).
    """

    name: str
    weight: float
    status: Literal["healthy", "ejected", "probing"]
    in_flight: int
    failures: int
    ejections: int
    ejected_until: float
    served: int
    failed: int


class _Deployment:
    __slots__ = (
        "ejected_until",
        "ejections",
        "failed",
        "failures",
        "in_flight",
        "last_failed",
        "last_healthy",
        "name",
        "probe_busy",
        "remote_in_flight",
        "served",
        "weight",
    )

    def __init__(self, name: str, weight: float) -> None:
        self.name = name
        self.weight = weight
        self.in_flight = 0
        self.remote_in_flight = 0  # the other workers' calls, from the last Redis snapshot
        self.failures = 0  # failures in a row
        self.ejections = 0
        self.ejected_until = 0.0  # 0: never ejected
        self.last_healthy = 0.0  # when the last ejection ended in a success
        self.last_failed = 0.0  # when the last failure ended
        self.probe_busy = False
        self.served = 0
        self.failed = 0

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def probing(self, now: float) -> bool:
        # Ejected once, the time is over, and no success since: the next call is a probe.
        return self.ejected_until > 0 and now >= self.ejected_until and self.last_healthy < self.ejected_until


class HealthTable:
    """Health, weights and calls in flight of every deployment the router knows.

    ``HealthTable({"a": 2.0, "b": 1.0}, policy)``; ``groups`` are the deployment names
    of each model (the percent rule applies within each). ``clock`` is wall time by
    default (ejection times are shared between machines through Redis).
    """

    def __init__(
        self,
        weights: dict[str, float],
        policy: EjectionPolicy | None = None,
        *,
        groups: Iterable[Sequence[str]] = (),
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        for name, weight in weights.items():
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
                raise ConfigError(f"deployment {name!r}: field 'weight': must be a number > 0", field="weight")
        self.policy = policy or EjectionPolicy()
        self.clock = clock
        self._rng = rng or random.Random()
        self._deployments = {name: _Deployment(name, float(weight)) for name, weight in weights.items()}
        self._groups: dict[str, list[list[str]]] = {name: [] for name in weights}
        for group in groups:
            members = list(dict.fromkeys(group))
            for name in members:
                self._groups[name].append(members)

    # -- reading ---------------------------------------------------------------

    def state(self, name: str) -> DeploymentState:
        """A copy of what the table knows of deployment ``name``."""
        d = self._deployments[name]
        now = self.clock()
        status = "ejected" if d.ejected(now) else "probing" if d.probing(now) else "healthy"
        return DeploymentState(
            name,
            d.weight,
            status,
            d.in_flight + d.remote_in_flight,
            d.failures,
            d.ejections,
            d.ejected_until,
            d.served,
            d.failed,
        )

    def ejected(self, name: str) -> bool:
        """True while ``name`` is ejected (its ejection time not yet over)."""
        return self._deployments[name].ejected(self.clock())

    def failing(self, name: str) -> bool:
        """True while ``name`` is ejected, or has failed ``consecutive_failures`` times in
        a row with the last failure less than ``base_ejection_seconds`` ago. Readiness
        reads it: a model's only deployment is never ejected (it keeps taking calls), but
        it is down. The time limit lets readiness come back with no traffic to prove it,
        as an ejection ends, so a load balancer sends the calls that test it again."""
        d = self._deployments[name]
        now = self.clock()
        if d.ejected(now):
            return True
        policy = self.policy
        return d.failures >= policy.consecutive_failures and now - d.last_failed < policy.base_ejection_seconds

    # -- picking ---------------------------------------------------------------

    def pick(self, names: Sequence[str], exclude: str | None = None) -> str | None:
        """One of ``names`` for the next attempt.

        Among the healthy ones (and probing ones without a probe in flight), weighted
        least-request; if none, the candidate whose ejection ends soonest (never nothing).
        ``exclude``: the deployment that just failed, for the router's second attempt,
        which goes only to a healthy one: ``None`` if there is none.
        """
        now = self.clock()
        deployments = self._deployments
        candidates = [deployments[n] for n in names if n != exclude]
        eligible = [d for d in candidates if not d.ejected(now) and not (d.probe_busy and d.probing(now))]
        if not eligible:
            if exclude is not None or not candidates:
                return None
            return min(candidates, key=lambda d: d.ejected_until).name
        if len(eligible) == 1:
            return eligible[0].name
        bias = self.policy.in_flight_bias
        scores = [d.weight / (d.in_flight + d.remote_in_flight + 1) ** bias for d in eligible]
        return self._rng.choices(eligible, scores)[0].name

    # -- reporting -------------------------------------------------------------

    def started(self, name: str) -> None:
        """An attempt on ``name`` begins (a probe, if its ejection time is over)."""
        d = self._deployments[name]
        d.in_flight += 1
        if d.probing(self.clock()):
            d.probe_busy = True

    def finished(self, name: str, verdict: Verdict, shared_failures: int | None = None) -> bool:
        """An attempt on ``name`` ended; returns True when this verdict ejected it.

        ``shared_failures``: the failures in a row every worker saw (from Redis), used in
        place of the local count when given.
        """
        d = self._deployments[name]
        now = self.clock()
        d.in_flight = max(0, d.in_flight - 1)
        was_probe, d.probe_busy = d.probe_busy, False
        if verdict == "none":
            return False
        if verdict == "ok":
            d.served += 1
            d.failures = 0
            if d.probing(now):
                d.last_healthy = now  # the probe answered: back in the pool
            return False
        d.failed += 1
        d.last_failed = now
        # Redis's count is every worker's: a success anywhere ended the streak.
        d.failures = d.failures + 1 if shared_failures is None else shared_failures
        if d.ejected(now):
            return False
        if (was_probe or d.probing(now) or d.failures >= self.policy.consecutive_failures) and self._may_eject(d, now):
            self._eject(d, now)
            return True
        return False

    def _may_eject(self, d: _Deployment, now: float) -> bool:
        percent = self.policy.max_ejection_percent
        groups = self._groups[d.name] or [[d.name]]
        for group in groups:
            ejected = sum(1 for n in group if n != d.name and self._deployments[n].ejected(now))
            allowed = max(1, math.floor(len(group) * percent / 100)) if percent > 0 else 0
            if ejected + 1 > allowed or ejected + 1 >= len(group):
                return False
        return True

    def _eject(self, d: _Deployment, now: float) -> None:
        policy = self.policy
        if d.ejections and now - max(d.last_healthy, d.ejected_until) > policy.max_ejection_seconds:
            d.ejections = 0  # a long healthy spell: the next ejection is short again
        d.ejections += 1
        d.ejected_until = now + min(policy.base_ejection_seconds * d.ejections, policy.max_ejection_seconds)
        d.failures = 0

    def in_flight(self) -> dict[str, int]:
        """This process's calls in flight per deployment (what it shares)."""
        return {name: d.in_flight for name, d in self._deployments.items()}

    def merge(self, name: str, remote_in_flight: int, ejected_until: float, ejections: int) -> None:
        """Fold in what the other workers know (a Redis snapshot): ``remote_in_flight``
        counts every worker's calls as they were shared; theirs is the later ejection."""
        d = self._deployments[name]
        d.remote_in_flight = max(0, remote_in_flight - d.in_flight)
        # An ejection already over is history: adopting it would make this worker probe.
        if ejected_until > d.ejected_until and ejected_until > self.clock():
            d.ejected_until = ejected_until
            d.ejections = max(d.ejections, ejections)

    def shared_fields(self, name: str) -> tuple[float, int]:
        """``(ejected_until, ejections)`` of ``name``, as written to Redis."""
        d = self._deployments[name]
        return d.ejected_until, d.ejections


_FAILED = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return failures
"""

_SHARE = """
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
for _, worker in ipairs(gone) do redis.call('HDEL', KEYS[2], worker) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
local total = 0
for _, count in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(count) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
local health = redis.call('HMGET', KEYS[3], 'ejected_until', 'ejections', 'failures')
return {total, health[1] or '0', health[2] or '0', health[3] or '0'}
"""


class SharedHealth:
    """Calls in flight and health of deployments shared through Redis.

    Per deployment: ``{prefix}{name}:workers`` (sorted set of workers, scored by when
    their entry expires, so a crashed worker's calls age out), ``{prefix}{name}:flight``
    (hash: each worker's calls in flight) and ``{prefix}{name}:health`` (hash:
    ``failures`` in a row over every worker, ``ejected_until``, ``ejections``).

    A healthy call costs Redis nothing: ``share`` (one round trip for every deployment)
    publishes this worker's counts and reads the others' at most every refresh; only a
    failure (``failed``), the first success after one (``recovered``) and an ejection
    (``eject``) write at once. Every method raises what ``RedisClient.run`` raises; the
    router catches it and goes on with its local book.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str = "onion:deployment:",
        policy: EjectionPolicy | None = None,
        worker_ttl: float = 5.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.policy = policy or EjectionPolicy()
        self.worker = secrets.token_hex(6)
        self.worker_ttl = worker_ttl
        self._failed = redis.script(_FAILED)
        self._share = redis.script(_SHARE)

    @property
    def _ttl(self) -> int:
        return int(self.policy.max_ejection_seconds * 2) + 1

    def _health(self, name: str) -> str:
        return f"{self.prefix}{name}:health"

    async def failed(self, name: str) -> int:
        """Count a failure of ``name``; returns the failures in a row every worker saw."""
        keys, args = [self._health(name)], [self._ttl]
        return int(await self.redis.run(lambda: self._failed(keys=keys, args=args)))

    async def recovered(self, name: str) -> None:
        """``name`` answered: its failure streak ends for every worker."""
        await self.redis.run(self.redis.sync.hset, self._health(name), "failures", 0)

    async def eject(self, name: str, ejected_until: float, ejections: int) -> None:
        """Record that ``name`` is ejected until ``ejected_until`` (wall time)."""
        health = self._health(name)
        ttl = self._ttl

        def write(sync: Any = self.redis.sync) -> None:
            pipe = sync.pipeline(transaction=False)
            pipe.hset(health, mapping={"ejected_until": repr(ejected_until), "ejections": ejections, "failures": 0})
            pipe.expire(health, ttl)
            pipe.execute()

        await self.redis.run(write)

    async def share(self, in_flight: dict[str, int], now: float) -> dict[str, tuple[int, float, int, int]]:
        """Publish this worker's calls in flight per deployment; returns, per deployment,
        ``(calls in flight over every worker, ejected_until, ejections, failures)``."""
        names = list(in_flight)
        expires, ttl = now + self.worker_ttl, int(self.worker_ttl) + 1

        def exchange(sync: Any = self.redis.sync) -> list[Any]:
            pipe = sync.pipeline(transaction=False)
            for name in names:
                keys = [f"{self.prefix}{name}:workers", f"{self.prefix}{name}:flight", self._health(name)]
                self._share(keys=keys, args=[self.worker, in_flight[name], expires, now, ttl], client=pipe)
            return list(pipe.execute())

        replies = await self.redis.run(exchange)
        return {
            name: (int(total), float(until), int(ejections), int(failures))
            for name, (total, until, ejections, failures) in zip(names, replies, strict=True)
        }
