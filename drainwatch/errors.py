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
    └── BusError                 the event bus refused or lost a message

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
