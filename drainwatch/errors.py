"""Every error drainwatch raises derives from ``DrainwatchError``.

    DrainwatchError
    ├── BadInput                 exit code 2: the user can fix it (one paragraph, no traceback)
    │   ├── ConfigError          a config file: names the field path (and line when known)
    │   ├── CodecError           a JSON document or message that is not the canonical form
    │   ├── UsageError           command-line arguments
    │   └── MalformedRpcResponse a node answered with something that is not what the protocol says
    ├── RpcError                 talking to a node failed
    │   └── RetriableRpcError    timeouts, connection refused, rate limits: try again / fail over
    ├── StoreError               the database refused or lost a write
    │   └── ExpectationConflict  a reference already stored with other values (also BadInput)
    ├── BusError                 the event bus refused or lost a message
    └── DeliveryError            a sink could not deliver an alert: the outbox row is retried

Only the CLI turns these into exit codes and messages.
"""

from __future__ import annotations


class DrainwatchError(Exception):
    """Root of every error drainwatch raises on purpose."""


class BadInput(DrainwatchError):
    """Input the user can correct: exit code 2 with a clear message."""


class ConfigError(BadInput):
    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        where = f"{path} (line {line})" if line is not None else path
        super().__init__(f"{where}: {reason}")


class CodecError(BadInput):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class UsageError(BadInput):
    pass


class MalformedRpcResponse(BadInput):
    def __init__(self, endpoint: str, method: str, reason: str) -> None:
        self.endpoint = endpoint
        self.method = method
        super().__init__(f"{endpoint}: malformed answer to {method}: {reason}")


class RpcError(DrainwatchError):
    pass


class RetriableRpcError(RpcError):
    pass


class StoreError(DrainwatchError):
    pass


class BusError(DrainwatchError):
    pass


class ExpectationConflict(StoreError, BadInput):
    """An expectation's reference is already stored with other values: the exchange's system
    sent two different withdrawals under one id. Nothing of the call is kept."""


class DeliveryError(DrainwatchError):
    """A sink could not deliver an outbox row; the notifier retries it, never drops it.

    ``retry_after``: the receiver asked for a pause (HTTP 429 ``Retry-After``, in seconds) that
    holds for the whole sink. ``refused``: the receiver refused the request itself (a 4xx other
    than 429, a Slack error such as ``channel_not_found``): retrying soon will not help, so the
    row waits the longest back-off and the error is logged for someone to fix. ``ref``: where
    the message is, when the sink got that far before failing (kept, so that the next attempt
    updates it instead of looking for it). The message never contains a token or secret."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        refused: bool = False,
        ref: str | None = None,
    ) -> None:
        self.reason = reason
        self.retry_after = retry_after
        self.refused = refused
        self.ref = ref
        super().__init__(reason)
