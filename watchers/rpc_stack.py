"""What stands between a follower and its chain's nodes: small JSON-RPC middlewares, each a
``JsonRpc`` around another, and the one stack the wiring builds from them.

From the outside in::

    Backoff                  retriable failures of every endpoint: wait, then another round
      Failover               endpoints in turn; the one that answers is tried first next time;
                             an untrusted endpoint is taken out of the rotation and reported
        AnswerCheck          (one per endpoint) an answer of the wrong shape is garbage
          Verified           (one per endpoint) the node is on the configured network
            HttpJsonRpc / WebSocket transport

Each layer passes single calls and batches (``batch``) alike. The follow loop sees none of it:
it asks, and gets an answer it can trust or an error.

Errors that take an endpoint out of the rotation: the node serves another network
(``ConfigError`` from the ``Verified`` check: for good, until the process restarts with a
corrected config) or it answered garbage (``MalformedRpcResponse``: quarantined for 30 s, twice
as long at each repeat up to ``quarantine_seconds``, then checked again before it is read
again; the last node in the rotation is never quarantined, its garbage fails that call only).
Every other failure of an endpoint moves on to the next one, since another node may well answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from drainwatch.errors import (
    ConfigError,
    DrainwatchError,
    MalformedRpcResponse,
    RetriableRpcError,
    RpcError,
)
from drainwatch.ports import JsonRpc
from watchers.jsonrpc import Call, call_many

log = logging.getLogger(__name__)

#: The first quarantine of a node that answered garbage; doubled at each repeat, up to
#: ``quarantine_seconds``.
FIRST_QUARANTINE = 30.0

#: A check of one answer: (result, params, endpoint); raises ``MalformedRpcResponse``.
AnswerChecker = Callable[[Any, Sequence[Any], str], None]


class _Layer:
    """A middleware around one ``inner`` ``JsonRpc``, named after it."""

    def __init__(self, inner: JsonRpc) -> None:
        self.inner = inner

    @property
    def endpoint(self) -> str:
        return self.inner.endpoint


class Verified(_Layer):
    """Runs ``check`` on the endpoint before it is first read and again after any failure of it
    (the node behind it may have been replaced meanwhile)."""

    def __init__(self, inner: JsonRpc, check: Callable[[JsonRpc], None]) -> None:
        super().__init__(inner)
        self._check = check
        self._verified = False

    def verify(self) -> None:
        if not self._verified:
            self._check(self.inner)
            self._verified = True

    def forget(self) -> None:
        self._verified = False

    def call(self, method: str, params: Sequence[Any]) -> Any:
        return self._guarded(lambda: self.inner.call(method, params))

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        return self._guarded(lambda: call_many(self.inner, calls))  # type: ignore[no-any-return]

    def _guarded(self, ask: Callable[[], Any]) -> Any:
        self.verify()
        try:
            return ask()
        except DrainwatchError:
            self._verified = False
            raise


class AnswerCheck(_Layer):
    """Checks the shape of the answers to the methods it knows (``checks``), per endpoint, so a
    node that answers garbage is caught at its own door: an answer the mapping would refuse
    later is refused here, where the failover still knows which node gave it."""

    def __init__(self, inner: JsonRpc, checks: Mapping[str, AnswerChecker]) -> None:
        super().__init__(inner)
        self._checks = checks

    def call(self, method: str, params: Sequence[Any]) -> Any:
        result = self.inner.call(method, params)
        self._check(method, params, result)
        return result

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        results = call_many(self.inner, calls)
        for (method, params), result in zip(calls, results, strict=True):
            self._check(method, params, result)
        return results

    def _check(self, method: str, params: Sequence[Any], result: Any) -> None:
        check = self._checks.get(method)
        if check is not None:
            check(result, params, self.inner.endpoint)


class Failover:
    """Endpoints in turn, the first that answers wins and is tried first next time (a dead
    primary costs one timeout per call, not one per round). A final error of every endpoint
    raises the first of them; otherwise the last retriable error, for ``Backoff`` to retry."""

    def __init__(
        self,
        endpoints: Sequence[JsonRpc],
        *,
        quarantine_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("Failover needs at least one endpoint")
        self._endpoints = list(endpoints)
        self._quarantine = quarantine_seconds
        self._clock = clock
        self._lock = threading.Lock()
        #: Out of the rotation: endpoint name -> why (and, for garbage, until when).
        self.excluded: dict[str, DrainwatchError] = {}
        self._benched: list[tuple[float, JsonRpc]] = []  # (back at, endpoint) for garbage
        self._strikes: dict[str, int] = {}  # garbage answers per endpoint: longer each time
        self._last_excluded: DrainwatchError | None = None
        self.failovers = 0

    @property
    def endpoint(self) -> str:
        return self._endpoints[0].endpoint if self._endpoints else "no endpoint left"

    def verify_all(self) -> None:
        """Check every endpoint now (a wrong backup is found before the primary fails); one
        that is down is checked when it is first used."""
        for rpc in list(self._endpoints):
            checked = _verified_of(rpc)
            if checked is None:
                continue
            try:
                checked.verify()
            except ConfigError as exc:
                self._exclude(rpc, exc)
            except DrainwatchError as exc:  # down, refused, garbage: checked again when used
                log.warning("cannot check %s yet / まだ確認できません: %s", rpc.endpoint, exc)
        self._raise_if_none_left()

    def call(self, method: str, params: Sequence[Any]) -> Any:
        return self._first(lambda rpc: rpc.call(method, params))

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        return self._first(lambda rpc: call_many(rpc, calls))  # type: ignore[no-any-return]

    def _first(self, ask: Callable[[JsonRpc], Any]) -> Any:
        self._readmit()
        final: DrainwatchError | None = None
        retriable: RetriableRpcError | None = None
        for position, rpc in enumerate(list(self._endpoints)):
            try:
                result = ask(rpc)
            except ConfigError as exc:  # the node serves another network
                self._exclude(rpc, exc)
                continue
            except MalformedRpcResponse as exc:  # garbage: not trusted for a while
                self._bench(rpc, exc)
                final = final or exc
                continue
            except RetriableRpcError as exc:
                log.warning("RPC endpoint failed, trying the next / 次のエンドポイントへ: %s", exc)
                retriable = exc
                continue
            except RpcError as exc:
                final = final or exc
                continue
            if position:
                with self._lock:  # promote the endpoint that answered
                    if rpc in self._endpoints:
                        self._endpoints.remove(rpc)
                        self._endpoints.insert(0, rpc)
                    self.failovers += 1
            return result
        self._raise_if_none_left()
        if final is not None:
            raise final
        assert retriable is not None
        raise retriable

    def _exclude(self, rpc: JsonRpc, exc: ConfigError) -> None:
        log.error("endpoint taken out of rotation / エンドポイントを除外: %s", exc)
        with self._lock:
            if rpc in self._endpoints:
                self._endpoints.remove(rpc)
            self.excluded[rpc.endpoint] = exc
            self._last_excluded = exc

    def _bench(self, rpc: JsonRpc, exc: MalformedRpcResponse) -> None:
        with self._lock:
            if rpc not in self._endpoints:
                return
            if len(self._endpoints) == 1:
                # The last node in the rotation: benching it would leave nothing to ask, so its
                # garbage is an error of this call only (the caller pauses and asks again).
                log.error("the only endpoint left answered garbage / 不正な応答: %s", exc)
                return
            strikes = self._strikes[rpc.endpoint] = self._strikes.get(rpc.endpoint, 0) + 1
            seconds = min(self._quarantine, FIRST_QUARANTINE * 2 ** (strikes - 1))
            self._endpoints.remove(rpc)
            self._benched.append((self._clock() + seconds, rpc))
            self.excluded[rpc.endpoint] = exc
            self._last_excluded = exc
        log.error(
            "endpoint taken out of rotation for %.0f s, it answered garbage / 不正な応答のため"
            "エンドポイントを一時的に除外: %s",
            seconds,
            exc,
        )
        checked = _verified_of(rpc)
        if checked is not None:
            checked.forget()  # checked again before it is read again

    def _readmit(self) -> None:
        if not self._benched:
            return
        now = self._clock()
        with self._lock:
            due = [rpc for back, rpc in self._benched if back <= now]
            self._benched = [(back, rpc) for back, rpc in self._benched if back > now]
            for rpc in due:
                log.warning("endpoint back in rotation / エンドポイントを復帰: %s", rpc.endpoint)
                self._endpoints.append(rpc)
                self.excluded.pop(rpc.endpoint, None)

    def _raise_if_none_left(self) -> None:
        if not self._endpoints:
            assert self._last_excluded is not None
            raise self._last_excluded  # the exclusion that emptied the rotation


def _verified_of(rpc: JsonRpc) -> Verified | None:
    """The ``Verified`` layer of an endpoint's own stack, if it has one."""
    layer: Any = rpc
    while layer is not None:
        if isinstance(layer, Verified):
            return layer
        layer = getattr(layer, "inner", None)
    return None


class Backoff(_Layer):
    """Retries what failed on every endpoint for a retriable reason (down, slow, rate-limited,
    behind): ``rounds`` rounds with exponential pauses; final errors are raised at once."""

    def __init__(
        self,
        inner: JsonRpc,
        *,
        rounds: int = 3,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(inner)
        self._rounds = rounds
        self._backoff = backoff_seconds
        self._sleep = sleep

    def call(self, method: str, params: Sequence[Any]) -> Any:
        return self._retried(lambda: self.inner.call(method, params))

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        return self._retried(lambda: call_many(self.inner, calls))  # type: ignore[no-any-return]

    def _retried(self, ask: Callable[[], Any]) -> Any:
        for attempt in range(self._rounds):
            try:
                return ask()
            except RetriableRpcError:
                if attempt + 1 >= self._rounds:
                    raise
                self._sleep(self._backoff * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover


class FailoverRpc:
    """The stack a chain's follower reads through: ``Backoff(Failover([AnswerCheck(Verified(
    endpoint)), ...]))``. ``verify`` is the network check (``chain_id_check``), ``checks`` the
    answer checks by method (``evm_answer_checks``)."""

    def __init__(
        self,
        endpoints: Sequence[JsonRpc],
        *,
        rounds: int = 3,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        verify: Callable[[JsonRpc], None] | None = None,
        checks: Mapping[str, AnswerChecker] | None = None,
        quarantine_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("FailoverRpc needs at least one endpoint")
        layered: list[JsonRpc] = []
        for endpoint in endpoints:
            rpc: JsonRpc = endpoint
            if verify is not None:
                rpc = Verified(rpc, verify)
            if checks:
                rpc = AnswerCheck(rpc, checks)
            layered.append(rpc)
        self.failover = Failover(layered, quarantine_seconds=quarantine_seconds, clock=clock)
        self._outer = Backoff(
            self.failover, rounds=rounds, backoff_seconds=backoff_seconds, sleep=sleep
        )

    @property
    def endpoint(self) -> str:
        return self.failover.endpoint

    @property
    def excluded(self) -> dict[str, DrainwatchError]:
        return self.failover.excluded

    @property
    def failovers(self) -> int:
        return self.failover.failovers

    def verify_all(self) -> None:
        self.failover.verify_all()

    def call(self, method: str, params: Sequence[Any]) -> Any:
        return self._outer.call(method, params)

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        return self._outer.batch(calls)
