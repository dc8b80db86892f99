"""SIGKILL the notifier at random points of delivery, a few dozen times, while Slack (the stub)
also fails now and then and alert changes keep coming; restart it each time. In the end every
alert appears exactly once in the channel, in its last state, with each thread reply once.

Half the kills land inside a Slack call, chosen by call number: as the request arrives, or
after Slack acted on it and before its answer left (the process dies not knowing a message was
posted: the case the message metadata is for). The other half land at a random moment, in a
store write as likely as anywhere. No timing is asserted; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from drainwatch.model import Alert
from drainwatch.store import open_store
from tests.conftest import PROJECT_ROOT
from tests.fixtures.outbox import LIFECYCLES, check_channel, enqueue_lifecycle_step
from tests.fixtures.postgres import PgServer
from tests.fixtures.slack_stub import TOKEN, SlackStub

CHANNEL = "C0ALERTS01"
SINK = "slack:#security-alerts"
ALERTS = 10
KILLS = 30
STEP_EVERY = 6  # rounds between two lifecycle steps of every alert


class Zygote:
    """The child entry module: forks a fresh notifier process on each ``start``."""

    def __init__(self, store_url: str, slack_url: str, log: IO[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.notifier_child", store_url, slack_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=PROJECT_ROOT,
            env=env,
            text=True,
        )

    def start(self) -> int:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write("start\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line.strip().isdigit(), f"the notifier did not start: {line!r}"
        return int(line)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # dead already
        os.kill(pid, signal.SIGKILL)


def wait_dead(pid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    kill(pid)  # a kill that never came (nothing to deliver): end it here
    while alive(pid):
        time.sleep(0.01)


def arm_call_kill(stub: SlackStub, pid: int, rng: random.Random) -> None:
    """Kill ``pid`` at its k-th Slack call, as it arrives or once Slack acted on it."""
    target, phase = rng.randint(1, 12), rng.choice(["received", "applied"])
    seen = 0
    lock = threading.Lock()

    def on_call(method: str, when: str) -> None:
        nonlocal seen
        if when != phase:
            return
        with lock:
            seen += 1
            if seen == target:
                kill(pid)

    stub.on_call = on_call


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    server: PgServer = request.getfixturevalue("postgres_server")
    with server.database("drainwatch_kill") as url:
        yield url


def test_sigkill_at_random_points_every_alert_exactly_once(store_url: str, tmp_path: Path) -> None:
    rng = random.Random(20261122)
    store = open_store(store_url)
    finals: dict[str, Alert | None] = {}
    log_path = tmp_path / "notifier.log"
    with SlackStub(seed=7) as stub, log_path.open("w") as log:
        stub.fail("429", probability=0.05, retry_after="0.05")
        stub.fail("500", probability=0.05)
        stub.fail("drop", probability=0.05)
        zygote = Zygote(store_url, stub.base_url, log)
        try:
            for round_ in range(KILLS):
                step, due = divmod(round_, STEP_EVERY)
                if due == 0 and step <= max(len(c) for c in LIFECYCLES):
                    for n in range(ALERTS):
                        finals[f"alert-{n:04d}"] = enqueue_lifecycle_step(store, n, step, [SINK])
                stub.on_call = None
                pid = zygote.start()
                if round_ % 2 == 0:
                    arm_call_kill(stub, pid, rng)
                    wait_dead(pid, 1.5)
                else:
                    time.sleep(rng.uniform(0.0, 0.4))
                    kill(pid)
                    wait_dead(pid, 3.0)
            stub.on_call = None
            stub.clear_faults()
            pid = zygote.start()
            deadline = time.monotonic() + 30
            while store.outbox_backlog() and time.monotonic() < deadline:
                time.sleep(0.05)
            kill(pid)
            wait_dead(pid, 3.0)
        finally:
            stub.on_call = None
            zygote.close()
        assert store.outbox_backlog() == {}, log_path.read_text()[-3000:]
        check_channel(stub, CHANNEL, SINK, store, {k: v for k, v in finals.items() if v})
        assert stub.calls["conversations.history"] > 0  # some kills did need the search
    store.close()
    assert TOKEN not in log_path.read_text()
