"""The follow loop every chain shares, on a scripted chain and a real store: crashes at the
worst moments (half-way through retracting a reorg, inside a new deployment's first block) lose
no block and leave no replaced block unretracted."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drainwatch import codec
from drainwatch.bus.inprocess import InProcessBus
from drainwatch.events import BlockConfirmed, BlockConnected, BlockDisconnected, Event
from drainwatch.model import BlockRef, Chain, ChainKind
from drainwatch.ports import Store
from drainwatch.store import open_store
from watchers.follow import Follower, NodeInconsistent

NAME = "scripted"


@dataclass(frozen=True)
class Block:
    ref: BlockRef
    parent_hash: str
    time: datetime


class Node:
    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def extend(self, n: int, branch: str) -> None:
        for _ in range(n):
            height = len(self.blocks)
            parent = self.blocks[-1].ref.hash if self.blocks else "0" * 64
            digest = hashlib.sha256(f"{branch}{height}".encode()).hexdigest()
            self.blocks.append(Block(BlockRef(height, digest), parent, datetime.now(UTC)))

    def replace_from(self, height: int, n: int, branch: str) -> None:
        del self.blocks[height:]
        self.extend(n, branch)


class Scripted(Follower[Block]):
    def __init__(self, node: Node, store: Store, bus: InProcessBus, **kw: Any) -> None:
        chain = Chain(NAME, ChainKind.BITCOIN, "regtest", "BTC", 8, confirmations=1)
        super().__init__(chain, store, bus, "t", **kw)
        self.node = node
        self.resyncs: list[BlockRef | None] = []

    def node_head(self) -> int:
        return len(self.node.blocks) - 1

    def node_block(self, height: int) -> BlockRef:
        if height >= len(self.node.blocks):
            raise NodeInconsistent(f"no block {height}")
        return self.node.blocks[height].ref

    def fetch(self, height: int) -> Block | None:
        return self.node.blocks[height] if height < len(self.node.blocks) else None

    def extract(self, block: Block) -> list[Event]:
        return []

    def resync(self, checkpoint: BlockRef | None) -> None:
        self.resyncs.append(checkpoint)


@pytest.fixture
def rig(tmp_path: Path) -> tuple[Node, Store, InProcessBus, list[Event]]:
    from drainwatch import codec

    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    bus = InProcessBus()
    seen: list[Event] = []
    sub = bus.subscribe("t", "g")
    original = bus.publish

    def publish(topic: str, key: str, value: bytes) -> None:
        original(topic, key, value)
        sub.poll(lambda m: seen.append(codec.loads_event(m.value)))

    bus.publish = publish  # type: ignore[method-assign]
    node = Node()
    yield node, store, bus, seen
    store.close()


def _live(store: Store) -> list[BlockRef]:
    return sorted((ref for ref, _ in store.recent_blocks(NAME, 1000)), key=lambda r: r.height)


def test_a_crash_half_way_through_retracting_a_reorg(
    rig: tuple[Node, Store, InProcessBus, list[Event]],
) -> None:
    node, store, bus, seen = rig
    node.extend(10, "a")
    Scripted(node, store, bus, start_height=0).step()
    node.replace_from(7, 4, "b")  # 7..9 replaced by 7'..10'
    real = store.orphan_block
    calls = 0

    def crash_after_first(chain: str, ref: BlockRef) -> int:
        nonlocal calls
        calls += 1
        changed = real(chain, ref)
        if calls == 1:
            raise SystemExit("killed while retracting")
        return changed

    store.orphan_block = crash_after_first  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        Scripted(node, store, bus, start_height=0).step()
    store.orphan_block = real  # type: ignore[method-assign]
    Scripted(node, store, bus, start_height=0).step()
    # Every replaced block retracted, every block of the new branch processed, none skipped.
    assert _live(store) == [b.ref for b in node.blocks]
    disconnected = {e.block.height for e in seen if isinstance(e, BlockDisconnected)}
    assert disconnected == {7, 8, 9}
    connected = [e.block for e in seen if isinstance(e, BlockConnected)]
    assert [b.ref for b in node.blocks[7:]] == connected[-4:]
    assert store.get_checkpoint(NAME) == node.blocks[-1].ref


def test_a_crash_in_a_new_deployments_first_block_resumes_at_that_block(
    rig: tuple[Node, Store, InProcessBus, list[Event]],
) -> None:
    node, store, bus, _ = rig
    node.extend(20, "a")

    def die() -> None:
        raise SystemExit("killed after publishing the first block")

    first = Scripted(node, store, bus, after_publish=die)
    with pytest.raises(SystemExit):
        first.step()
    assert store.get_checkpoint(NAME) == node.blocks[18].ref  # the block below the first
    node.extend(5, "a")  # the head moves on while the watcher is down
    Scripted(node, store, bus).step()
    heights = [ref.height for ref in _live(store)]
    assert heights == list(range(19, 25))  # resumed at the first block: nothing skipped


class _Lagging(Scripted):
    """Confirmations 2, and a backend that can lag (has no block at a height it announced)."""

    def __init__(self, node: Node, store: Any, bus: Any, **kw: Any) -> None:
        super().__init__(node, store, bus, **kw)
        self.chain = Chain(NAME, ChainKind.BITCOIN, "regtest", "BTC", 8, confirmations=2)
        self.lag = False

    def fetch(self, height: int) -> Any:
        return None if self.lag else super().fetch(height)


def _recording(tmp_path: Path) -> tuple[Any, InProcessBus, list[Event]]:
    store = open_store(f"sqlite:///{tmp_path / 'confirm.db'}")
    bus = InProcessBus()
    seen: list[Event] = []
    sub = bus.subscribe("t", "g")
    publish = bus.publish

    def recorded(topic: str, key: str, value: bytes) -> None:
        publish(topic, key, value)
        sub.poll(lambda m: seen.append(codec.loads_event(m.value)))

    bus.publish = recorded  # type: ignore[method-assign]
    return store, bus, seen


@pytest.mark.parametrize("how", ["until", "lagging backend"])
def test_a_replaced_block_is_never_announced_confirmed(tmp_path: Path, how: str) -> None:
    """A step that stops before the block after a replaced one (a batch run's --until-height,
    a backend that has not got the next block) must not confirm the replaced block: the node
    no longer has it. It is retracted once the next block is read."""
    store, bus, seen = _recording(tmp_path)
    node = Node()
    node.extend(6, "a")  # a0..a5
    follower = _Lagging(node, store, bus, start_height=0)
    follower.step()
    a5 = node.blocks[5].ref
    node.replace_from(5, 2, "b")  # a5 replaced by b5, b6: a5 would have its 2 confirmations
    if how == "until":
        follower.step(until=5)
    else:
        follower.lag = True
        follower.step()
    assert a5 not in [e.block for e in seen if isinstance(e, BlockConfirmed)]
    follower.lag = False
    follower.step()
    assert a5 in [e.block for e in seen if isinstance(e, BlockDisconnected)]
    assert a5 not in [e.block for e in seen if isinstance(e, BlockConfirmed)]
    # b5, read with its two confirmations already, went out confirmed: nothing left to confirm.
    assert node.blocks[5].ref in [ref for ref, _ in store.recent_blocks(NAME, 10)]
    assert store.unconfirmed_blocks(NAME, 5) == []
