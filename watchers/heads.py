"""New heads by ``eth_subscribe(["newHeads"])``: a wake-up call for a chain's follow loop.

A notification only says "look now": its payload is never read, because the follower asks the
node for the head and walks block by block itself, with every check it makes. The follow loop
waits on ``signal`` with its poll interval as the timeout, so polling stays both the fallback
(a node without WebSocket) and the safety net (a notification lost, a subscription down).

While the subscription is down the loop keeps polling and the subscription is tried again
after growing pauses; each time it is (re)established the signal is set once, so that the
blocks mined meanwhile are looked for at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from drainwatch.errors import DrainwatchError, RetriableRpcError
from watchers.wsrpc import WsJsonRpc

log = logging.getLogger(__name__)

#: (chain, what went wrong, seconds until the next attempt)
LossReport = Callable[[str, Exception, float], None]


class HeadWatch:
    """Keeps one ``newHeads`` subscription open on one WebSocket endpoint of one chain."""

    def __init__(
        self,
        chain: str,
        rpc: WsJsonRpc,
        signal: threading.Event | None = None,
        *,
        on_lost: LossReport | None = None,
        on_restored: Callable[[str], None] | None = None,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self.chain = chain
        self.rpc = rpc
        self.signal = signal or threading.Event()
        self._on_lost = on_lost
        self._on_restored = on_restored
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()  # set when the subscription is lost, or on stop
        self._thread: threading.Thread | None = None
        #: Set while subscribed (for operators' status and for tests).
        self.subscribed = threading.Event()
        self.subscriptions = 0  # how many times a subscription was established
        self.notifications = 0

    @property
    def endpoint(self) -> str:
        return self.rpc.endpoint

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"heads-{self.chain}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self.rpc.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.rpc.subscribe(["newHeads"], self._on_head, self._wake.set)
            except DrainwatchError as exc:
                if self._stop.is_set():
                    return
                failures += 1
                self._report(exc, self._pause(failures))
                self._stop.wait(self._pause(failures))
                continue
            self.subscriptions += 1
            self.subscribed.set()
            if failures and self._on_restored is not None:
                self._on_restored(self.chain)
            elif failures:
                log.warning("%s: newHeads subscription restored on %s", self.chain, self.endpoint)
            self.signal.set()  # blocks mined while we were not subscribed: look now
            since = time.monotonic()
            self._wake.wait()
            self.subscribed.clear()
            if self._stop.is_set():
                return
            # A subscription that held a while starts the pauses again; one dropped at once
            # (a proxy that accepts and then closes) makes them grow, never a reconnect storm.
            held = time.monotonic() - since >= self._max_backoff
            failures = 1 if held else failures + 1
            lost = RetriableRpcError(f"{self.endpoint}: the newHeads subscription was lost")
            self._report(lost, self._pause(failures))
            self._stop.wait(self._pause(failures))

    def _on_head(self, _payload: Any) -> None:
        self.notifications += 1
        self.signal.set()

    def _pause(self, failures: int) -> float:
        return float(min(self._max_backoff, self._backoff * 2 ** (failures - 1)))

    def _report(self, exc: Exception, pause: float) -> None:
        if self._on_lost is not None:
            self._on_lost(self.chain, exc, pause)
            return
        log.warning(
            "%s: newHeads subscription down (%s); polling meanwhile, next try in %.1f s",
            self.chain,
            exc,
            pause,
        )
