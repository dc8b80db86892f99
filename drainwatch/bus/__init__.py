"""Event-bus adapters implementing ``drainwatch.ports.EventBus``.

- ``drainwatch.bus.inprocess.InProcessBus`` — the embedded default: one process, no server.
- ``drainwatch.bus.kafka.KafkaBus`` — Kafka topics for multi-process deployments. It is not
  imported here so that an embedded run never loads kafka-python; ``drainwatch.wiring`` imports
  it when the settings ask for Kafka.

Both give the same guarantees, pinned by ``tests/contract/test_bus.py``: per-key order, offsets
committed per consumer group only after the handler returned, redelivery after a handler raised,
and ``flush`` raising ``BusError`` instead of losing a message silently.
"""

from drainwatch.bus.inprocess import InProcessBus, InProcessSubscription

__all__ = ["InProcessBus", "InProcessSubscription"]
