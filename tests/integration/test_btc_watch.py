"""The Bitcoin watcher end to end on a real bcoin regtest node: wallets described by a SLIP-132
xpub (hot) and a 2-of-3 wsh(sortedmulti) descriptor (cold) receive and spend; balances are
exact after every block; a spend is seen pending in the mempool before it is mined; a reorg
orphans exactly the replaced events and un-spends their coins; backfill finds coins the watcher
started too late to see; the gap limit moves ahead as addresses get used."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from drainwatch.config import load_config
from drainwatch.devnode_bitcoin import SINK_ADDRESS, BcoinNode
from drainwatch.model import AlertState, BlockRef, Severity, Transfer, TransferStatus
from drainwatch.pipeline import Pipeline
from drainwatch.regtest_wallet import CHANGE, RECEIVE, RegtestWallet, SignedTx
from drainwatch.wiring import App, build_app, build_pipeline
from tests.integration.test_pipeline import RecordingSink

CHAIN = "btc"
ATTACKER = RegtestWallet.single("attacker")

CONFIG = """\
exchange: {{name: Test Exchange}}
store: {{url: "sqlite:///{db}"}}
chains:
  btc:
    kind: bitcoin
    network: regtest
    rpc: [{{url: "{url}", auth_env: BCOIN_TEST_AUTH}}]
    confirmations: {confirmations}
    poll_interval_seconds: 0.05
    address_prefixes: {{p2pkh: 60, p2sh: 38, bech32_hrp: rb}}
    gap_limit: {gap}
wallets:
  btc-hot: {{chain: btc, role: hot, custody: {{kind: single_key}}, xpubs: ["{vpub}"]}}
  btc-cold:
    chain: btc
    role: cold
    custody: {{kind: multisig, threshold: 2, signers: [cfo, cto, ciso]}}
    descriptors: ["{descriptor}"]
"""


def write_config(
    tmp_path: Path,
    node: BcoinNode,
    hot: RegtestWallet,
    cold: RegtestWallet,
    *,
    confirmations: int = 1,
    gap: int = 20,
) -> Path:
    path = tmp_path / "drainwatch.yaml"
    path.write_text(
        CONFIG.format(
            db=tmp_path / "dw.db",
            url=node.url,
            confirmations=confirmations,
            gap=gap,
            vpub=hot.xpub_slip132(),
            descriptor=cold.descriptor(),
        )
    )
    return path


@pytest.fixture
def auth(bcoin_node: BcoinNode, monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = bcoin_node.auth
    monkeypatch.setenv("BCOIN_TEST_AUTH", f"{user}:{password}")


class Watch:
    """The pipeline `drainwatch watch` builds from the config, stepped by the test."""

    def __init__(self, config: Path, start: int | None = 0) -> None:
        self.app: App = build_app(load_config(config))
        self.sink = RecordingSink()
        starts = {CHAIN: start} if start is not None else None
        self.pipeline: Pipeline = build_pipeline(self.app, [self.sink], start_heights=starts)

    def step(self) -> None:
        self.pipeline.run_once()

    def balances(self) -> dict[str, int]:
        return self.app.store.utxo_balances(CHAIN)

    def transfers(self, txid: str) -> list[Transfer]:
        return [t for t in self.app.store.transfers(chain=CHAIN) if t.tx_hash == txid]

    def close(self) -> None:
        self.pipeline.close()
        self.app.close()


@pytest.fixture
def wallets(bcoin_node: BcoinNode) -> tuple[RegtestWallet, RegtestWallet]:
    hot, cold = RegtestWallet.single("hot"), RegtestWallet.multisig("cold")
    hot.fund(bcoin_node)
    cold.fund(bcoin_node, blocks=2)
    return hot, cold


@pytest.fixture
def watch(
    tmp_path: Path, bcoin_node: BcoinNode, wallets: tuple[RegtestWallet, RegtestWallet], auth: None
) -> Iterator[Watch]:
    w = Watch(write_config(tmp_path, bcoin_node, *wallets))
    yield w
    w.close()


def beat(node: BcoinNode, wallet: RegtestWallet, original: SignedTx) -> SignedTx:
    """The same coins, a higher fee, straight into a block (bcoin 1.0.2 relays no
    replacement): the original leaves the mempool, its coins spent by another transaction."""
    replacement = wallet.build_replacement(original, fee=original.fee + 5_000)
    wallet.record(replacement, replaces=original)
    node.mine_block([replacement.raw], SINK_ADDRESS)
    return replacement


def expected(hot: RegtestWallet, cold: RegtestWallet) -> dict[str, int]:
    return {name: b for name, b in (("btc-hot", hot.balance()), ("btc-cold", cold.balance())) if b}


def test_balances_are_exact_after_every_block_and_spends_show_pending_first(
    bcoin_node: BcoinNode, wallets: tuple[RegtestWallet, RegtestWallet], watch: Watch
) -> None:
    hot, cold = wallets
    watch.step()
    assert watch.balances() == expected(hot, cold)
    assert watch.app.store.get_checkpoint(CHAIN).height == bcoin_node.height()  # type: ignore[union-attr]

    # A cold-wallet drain: seen in the mempool before any block carries it.
    drain = cold.send(bcoin_node, [(ATTACKER.address(), 700_000_000)])
    watch.step()
    pending = watch.transfers(drain.txid)
    assert {t.status for t in pending} == {TransferStatus.PENDING}
    assert [t.index for t in pending] == ["out:0", "out:1"]  # payee, then change
    assert pending[0].to_address == ATTACKER.address() and pending[0].amount == 700_000_000
    assert pending[1].to_address == cold.address(CHANGE, 0)
    alerts = {a.counterparty: a for a in watch.app.store.alerts()}
    assert alerts[ATTACKER.address()].state is AlertState.PENDING
    assert alerts[ATTACKER.address()].severity is Severity.CRITICAL
    assert alerts[ATTACKER.address()].rule_id == "cold-outflow"
    assert list(alerts) == [ATTACKER.address()]  # the change back to its own: planned, no alert
    assert watch.balances() != expected(hot, cold)  # a pending spend moves no coin

    bcoin_node.mine(1, SINK_ADDRESS)
    watch.step()
    mined = watch.transfers(drain.txid)
    assert {t.status for t in mined} == {TransferStatus.CONFIRMED}
    assert {t.block.height for t in mined if t.block} == {bcoin_node.height()}
    assert watch.balances() == expected(hot, cold)
    assert alerts[ATTACKER.address()].id in {
        a.id for a in watch.app.store.alerts() if a.state is AlertState.CONFIRMED
    }

    # Hot wallet payments with change, block after block: exact after each. No expectation
    # announced them: each payment (not its change) is an unplanned outflow.
    for n in range(3):
        paid = hot.send(bcoin_node, [(ATTACKER.address(index=n + 1), 10_000_000 * (n + 1))])
        bcoin_node.mine(1, SINK_ADDRESS)
        watch.step()
        assert watch.balances() == expected(hot, cold), n
        assert [
            (a.rule_id, a.severity, a.state, a.counterparty, a.amount)
            for a in watch.app.store.alerts()
            if a.tx_hash == paid.txid
        ] == [
            (
                "unplanned-outflow",
                Severity.HIGH,
                AlertState.CONFIRMED,
                ATTACKER.address(index=n + 1),
                10_000_000 * (n + 1),
            )
        ], n
    # The balance at an earlier height is still exact: before the drain, the cold wallet
    # held its two coinbases.
    before = watch.app.store.utxo_balances(CHAIN, bcoin_node.height() - 4)
    assert before["btc-cold"] == sum(u.value for u in drain.spent) + sum(
        u.value for u in cold.utxos if u not in drain.spent and u != drain.change
    )


def test_a_reorg_orphans_exactly_the_replaced_events_and_unspends_their_coins(
    bcoin_node: BcoinNode, wallets: tuple[RegtestWallet, RegtestWallet], watch: Watch
) -> None:
    hot, cold = wallets
    watch.step()
    balance_before = watch.balances()
    keep = hot.send(bcoin_node, [(ATTACKER.address(), 5_000_000)])
    bcoin_node.mine(1, SINK_ADDRESS)
    watch.step()
    drain = cold.send(bcoin_node, [(ATTACKER.address(index=1), 300_000_000)])
    [replaced] = bcoin_node.mine(1, SINK_ADDRESS)
    watch.step()
    assert {t.status for t in watch.transfers(drain.txid)} == {TransferStatus.CONFIRMED}

    bcoin_node.invalidate(replaced)  # the drain's block leaves the chain (and the mempool empties)
    bcoin_node.mine_block([], SINK_ADDRESS)
    bcoin_node.mine_block([], SINK_ADDRESS)
    watch.step()

    assert watch.pipeline.followers[0].reorgs == 1
    assert {t.status for t in watch.transfers(drain.txid)} == {TransferStatus.ORPHANED}
    assert {t.status for t in watch.transfers(keep.txid)} == {TransferStatus.CONFIRMED}
    drain_alerts = [a for a in watch.app.store.alerts() if a.tx_hash == drain.txid]
    assert drain_alerts and {a.state for a in drain_alerts} == {AlertState.RETRACTED}
    # The cold coins the drain spent are unspent again; the hot payment stands.
    cold.utxos = [u for u in cold.utxos if u != drain.change] + list(drain.spent)
    assert watch.balances() == expected(hot, cold)
    assert watch.balances()["btc-cold"] == balance_before["btc-cold"]


def test_the_gap_window_moves_ahead_as_addresses_get_used(
    tmp_path: Path, bcoin_node: BcoinNode, auth: None
) -> None:
    hot, cold = RegtestWallet.single("gap-hot"), RegtestWallet.multisig("gap-cold")
    payer = RegtestWallet.single("payer")
    payer.fund(bcoin_node, blocks=2)
    watch = Watch(write_config(tmp_path, bcoin_node, hot, cold, gap=5), start=None)
    try:
        watch.step()
        # Index 4 is inside the first window (0..4); index 9 only once 4 is used (5..9 are
        # the gap after it); index 15 is past the gap after 9 (10..14), so it is not seen.
        for index in (4, 9, 15):
            payer.send(bcoin_node, [(hot.address(RECEIVE, index), 1_000_000 + index)])
            bcoin_node.mine(1, SINK_ADDRESS)
            watch.step()
        assert watch.balances() == {"btc-hot": 1_000_004 + 1_000_009}
        # A multisig change-branch address inside its window.
        payer.send(bcoin_node, [(cold.address(CHANGE, 3), 2_000_000)])
        bcoin_node.mine(1, SINK_ADDRESS)
        watch.step()
        assert watch.balances()["btc-cold"] == 2_000_000
    finally:
        watch.close()


def test_backfill_finds_coins_received_before_the_watcher_started(
    tmp_path: Path,
    bcoin_node: BcoinNode,
    wallets: tuple[RegtestWallet, RegtestWallet],
    auth: None,
) -> None:
    from drainwatch.backfill import run_backfill

    hot, cold = wallets
    config = write_config(tmp_path, bcoin_node, hot, cold)
    late = Watch(config, start=None)  # a new deployment starts at the head: no coins known
    try:
        late.step()
        assert late.balances() == {}
        checkpoint = late.app.store.get_checkpoint(CHAIN)
    finally:
        late.close()
    assert checkpoint is not None
    import io

    err = io.StringIO()
    assert run_backfill(config, CHAIN, 0, None, workers=4, stream=io.StringIO(), err=err) == 0
    assert f"{CHAIN} 0..{checkpoint.height}" in err.getvalue()
    again = Watch(config, start=None)
    try:
        assert again.balances() == expected(hot, cold)
        assert again.app.store.get_checkpoint(CHAIN) == checkpoint  # the watcher's, untouched
        # The watcher now sees a spend of a coin it learnt of from the backfill.
        drain = cold.send(bcoin_node, [(ATTACKER.address(), 100_000_000)])
        again.step()
        assert {t.status for t in again.transfers(drain.txid)} == {TransferStatus.PENDING}
        bcoin_node.mine(1, SINK_ADDRESS)
        again.step()
        assert again.balances() == expected(hot, cold)
    finally:
        again.close()
    # A second backfill adds nothing.
    assert run_backfill(config, CHAIN, 0, None, workers=2, stream=io.StringIO(), err=err) == 0
    final = Watch(config, start=None)
    try:
        assert final.balances() == expected(hot, cold)
    finally:
        final.close()


def test_a_pending_spend_beaten_by_a_conflicting_one_is_orphaned(
    bcoin_node: BcoinNode, wallets: tuple[RegtestWallet, RegtestWallet], watch: Watch
) -> None:
    hot, cold = wallets
    watch.step()
    original = cold.send(bcoin_node, [(ATTACKER.address(), 200_000_000)])
    watch.step()
    assert {t.status for t in watch.transfers(original.txid)} == {TransferStatus.PENDING}
    replacement = beat(bcoin_node, cold, original)
    watch.step()
    assert {t.status for t in watch.transfers(original.txid)} == {TransferStatus.ORPHANED}
    assert {t.status for t in watch.transfers(replacement.txid)} == {TransferStatus.CONFIRMED}
    states = {a.tx_hash: a.state for a in watch.app.store.alerts()}
    assert states[original.txid] is AlertState.RETRACTED
    assert states[replacement.txid] is AlertState.CONFIRMED
    assert watch.balances() == expected(hot, cold)


def test_failover_past_a_dead_endpoint_and_refusal_of_another_network(
    tmp_path: Path, bcoin_node: BcoinNode, wallets: tuple[RegtestWallet, RegtestWallet], auth: None
) -> None:
    from drainwatch.devnode import free_port
    from drainwatch.errors import ConfigError

    hot, cold = wallets
    config = write_config(tmp_path, bcoin_node, hot, cold)
    single = config.read_text()
    dead = f"http://127.0.0.1:{free_port()}/"
    text = single.replace("rpc: [{url:", f'rpc: [{{url: "{dead}"}}, {{url:')
    config.write_text(text)
    watch = Watch(config)
    try:
        watch.step()
        assert watch.balances() == expected(hot, cold)
    finally:
        watch.close()
    config.write_text(single.replace("network: regtest", "network: testnet"))
    wrong = Watch(config)
    try:
        with pytest.raises(ConfigError, match="serves Bitcoin 'regtest', not testnet"):
            wrong.step()
    finally:
        wrong.close()


def test_a_killed_watcher_restarts_and_loses_and_duplicates_nothing(
    tmp_path: Path, bcoin_node: BcoinNode, wallets: tuple[RegtestWallet, RegtestWallet], auth: None
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from drainwatch.store import open_store

    hot, cold = wallets
    config = write_config(tmp_path, bcoin_node, hot, cold)
    start = bcoin_node.height()
    command = [sys.executable, "-m", "drainwatch.cli", "watch", str(config)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    sent: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []

    def wait(predicate: object, seconds: float = 60.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return True
            time.sleep(0.05)
        return False

    db = tmp_path / "dw.db"
    # A new deployment: the wallets' coins so far come from a backfill, which also sets the
    # checkpoint the watcher goes on from.
    backfill = [sys.executable, "-m", "drainwatch.cli", "backfill", str(config)]
    subprocess.run([*backfill, "--chain", CHAIN, "--from", "0"], env=env, check=True)
    try:
        for _ in range(3):
            proc = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            procs.append(proc)
            for i in range(4):
                payer = cold if i % 2 else hot
                sent.append(
                    payer.send(bcoin_node, [(ATTACKER.address(index=i), 1_000_000 + i)]).txid
                )
                bcoin_node.mine(1, SINK_ADDRESS)
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)  # mid-run, whatever it was doing
            proc.wait(timeout=30)
        final = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        procs.append(final)
        store = open_store(f"sqlite:///{db}", create=False)
        head = bcoin_node.height()
        assert wait(lambda: (store.get_checkpoint(CHAIN) or BlockRef(-1, "")).height == head)
        blocks = sorted(ref.height for ref, _ in store.recent_blocks(CHAIN, 100_000))
        assert blocks == list(range(blocks[0], head + 1)), "a block was skipped"
        assert blocks[0] <= start
        seen = {t.tx_hash for t in store.transfers(chain=CHAIN)}
        assert set(sent) <= seen
        # Each spend's alert once, none twice: the cold wallet's spends are cold outflows, the
        # hot wallet's unannounced payments unplanned outflows (their change raises none).
        alerts = store.alerts()
        assert len({a.id for a in alerts}) == len(alerts)
        cold_spends = {s for i, s in enumerate(sent) if i % 4 % 2}
        assert sorted((a.tx_hash, a.rule_id) for a in alerts) == sorted(
            (s, "cold-outflow" if s in cold_spends else "unplanned-outflow") for s in sent
        )
        assert store.utxo_balances(CHAIN) == expected(hot, cold)
        store.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


def test_balances_command_per_wallet_and_in_total(
    tmp_path: Path,
    bcoin_node: BcoinNode,
    wallets: tuple[RegtestWallet, RegtestWallet],
    watch: Watch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from drainwatch.cli import main

    hot, cold = wallets
    watch.step()
    funded = bcoin_node.height()
    cold.send(bcoin_node, [(ATTACKER.address(), 123_456_789)])
    bcoin_node.mine(1, SINK_ADDRESS)
    watch.step()
    config = str(tmp_path / "drainwatch.yaml")
    assert main(["balances", config, "--json"]) == 0
    now = json.loads(capsys.readouterr().out)
    assert now["wallets"] == {"btc-hot": str(hot.balance()), "btc-cold": str(cold.balance())}
    assert now["total"] == str(hot.balance() + cold.balance())
    assert now["height"] == bcoin_node.height()
    assert main(["balances", config, "--height", str(funded)]) == 0
    text = capsys.readouterr().out
    before = cold.balance() + 123_456_789  # and the drain's fee, paid by the cold wallet too
    assert f"at height / 高さ {funded}" in text
    cold_line = next(line for line in text.splitlines() if "btc-cold" in line)
    sats = int(cold_line.rsplit("(", 1)[1].split()[0])
    assert sats > before  # before the drain: its amount, its fee
    assert f"{sats // 10**8}.{sats % 10**8:08d} BTC" in cold_line
    for bad in (["--height", "-1"], ["--chain", "nope"], ["--height", str(10**30)]):
        assert main(["balances", config, *bad]) == 2
        assert "Traceback" not in capsys.readouterr().err
    assert main(["balances", str(tmp_path / "missing.yaml")]) == 2


# --- regressions found in review: verdicts across restarts and failures, fresh coins --------


def test_a_restart_settles_a_pending_spend_beaten_while_it_was_down(
    tmp_path: Path, bcoin_node: BcoinNode, wallets: tuple[RegtestWallet, RegtestWallet], auth: None
) -> None:
    hot, cold = wallets
    config = write_config(tmp_path, bcoin_node, hot, cold)
    first = Watch(config)
    first.step()
    original = cold.send(bcoin_node, [(ATTACKER.address(), 200_000_000)])
    first.step()
    first.close()
    replacement = beat(bcoin_node, cold, original)
    second = Watch(config)
    try:
        second.step()
        second.step()
        assert {t.status for t in second.transfers(original.txid)} == {TransferStatus.ORPHANED}
        assert {t.status for t in second.transfers(replacement.txid)} == {TransferStatus.CONFIRMED}
        assert second.balances() == expected(hot, cold)
    finally:
        second.close()


def test_a_block_that_fails_half_way_keeps_its_verdicts_for_the_retry(
    bcoin_node: BcoinNode, wallets: tuple[RegtestWallet, RegtestWallet], watch: Watch
) -> None:
    from drainwatch.errors import StoreError

    hot, cold = wallets
    watch.step()
    original = cold.send(bcoin_node, [(ATTACKER.address(), 200_000_000)])
    watch.step()
    beat(bcoin_node, cold, original)
    store = watch.app.store
    real = store.apply_utxo_block
    failed = []

    def once(*args: object, **kwargs: object) -> None:
        if not failed:
            failed.append(True)
            raise StoreError("the database went away")
        real(*args, **kwargs)  # type: ignore[arg-type]

    store.apply_utxo_block = once  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        watch.step()
    watch.step()
    assert {t.status for t in watch.transfers(original.txid)} == {TransferStatus.ORPHANED}
    assert watch.balances() == expected(hot, cold)


def test_a_pending_spend_of_a_coin_gone_in_a_reorg_is_withdrawn(
    bcoin_node: BcoinNode, wallets: tuple[RegtestWallet, RegtestWallet], watch: Watch
) -> None:
    hot, cold = wallets
    watch.step()
    deposit = hot.send(bcoin_node, [(cold.address(0, 7), 50_000_000)])
    [block] = bcoin_node.mine(1, SINK_ADDRESS)
    [fresh] = cold.receive(deposit.raw)
    watch.step()
    spend = cold.build([(ATTACKER.address(), 40_000_000)], inputs=[fresh])
    bcoin_node.send_raw(spend.raw)
    watch.step()
    assert {t.status for t in watch.transfers(spend.txid)} == {TransferStatus.PENDING}
    bcoin_node.invalidate(block)  # the deposit's block goes, and bcoin empties its mempool
    bcoin_node.mine_block([], SINK_ADDRESS)
    bcoin_node.mine_block([], SINK_ADDRESS)
    for _ in range(3):
        watch.step()
    assert {t.status for t in watch.transfers(spend.txid)} == {TransferStatus.ORPHANED}
    assert {t.status for t in watch.transfers(deposit.txid)} == {TransferStatus.ORPHANED}


def test_a_spend_of_a_coin_not_yet_confirmed_is_pending_once_the_coin_is_known(
    tmp_path: Path, bcoin_node: BcoinNode, wallets: tuple[RegtestWallet, RegtestWallet], auth: None
) -> None:
    """The follower follows the head: a coin is known from its block on (provisional, before
    its confirmations), so a spend of it waiting in the mempool is pending at once; and it
    stays pending, once, while the coin's block gathers its confirmations."""
    hot, cold = wallets
    watch = Watch(write_config(tmp_path, bcoin_node, hot, cold, confirmations=3))
    try:
        watch.step()
        deposit = hot.send(bcoin_node, [(cold.address(0, 0), 50_000_000)])
        bcoin_node.mine(1, SINK_ADDRESS)
        [fresh] = cold.receive(deposit.raw)
        drain = cold.build([(ATTACKER.address(), 40_000_000)], inputs=[fresh])
        bcoin_node.send_raw(drain.raw)
        watch.step()
        # The coin's block has 1 confirmation of 3: the deposit is provisional, the spend seen.
        assert {t.status for t in watch.transfers(deposit.txid)} == {TransferStatus.PROVISIONAL}
        assert {t.status for t in watch.transfers(drain.txid)} == {TransferStatus.PENDING}
        [alert] = [a for a in watch.app.store.alerts() if a.tx_hash == drain.txid]
        assert (alert.rule_id, alert.state) == ("cold-outflow", AlertState.PENDING)
        bcoin_node.mine_block([], SINK_ADDRESS)
        bcoin_node.mine_block([], SINK_ADDRESS)
        watch.step()
        assert drain.txid in bcoin_node.mempool()
        assert {t.status for t in watch.transfers(deposit.txid)} == {TransferStatus.CONFIRMED}
        assert {t.status for t in watch.transfers(drain.txid)} == {TransferStatus.PENDING}
        assert [a.state for a in watch.app.store.alerts() if a.tx_hash == drain.txid] == [
            AlertState.PENDING
        ]
    finally:
        watch.close()


def test_the_gap_window_survives_a_restart_after_the_coins_are_gone(
    tmp_path: Path, bcoin_node: BcoinNode, auth: None
) -> None:
    hot, cold = RegtestWallet.single("gap-hot"), RegtestWallet.multisig("gap-cold")
    payer = RegtestWallet.single("payer")
    payer.fund(bcoin_node, blocks=2)
    config = write_config(tmp_path, bcoin_node, hot, cold, gap=5)
    first = Watch(config, start=None)
    try:
        first.step()
        for index in (4, 9):
            paid = payer.send(bcoin_node, [(hot.address(RECEIVE, index), 1_000_000 + index)])
            bcoin_node.mine(1, SINK_ADDRESS)
            hot.receive(paid.raw)
            first.step()
        sweep = hot.build([(ATTACKER.address(), 2_000_013 - 10_000)], fee=10_000)
        bcoin_node.send_raw(sweep.raw)
        bcoin_node.mine(1, SINK_ADDRESS)
        first.step()
        assert first.balances() == {}
    finally:
        first.close()
    second = Watch(config, start=None)
    try:
        second.step()
        payer.send(bcoin_node, [(hot.address(RECEIVE, 12), 3_000_000)])  # inside 10..14
        bcoin_node.mine(1, SINK_ADDRESS)
        second.step()
        assert second.balances() == {"btc-hot": 3_000_000}
    finally:
        second.close()


def test_a_backfill_beside_a_running_watcher_hands_it_the_coins(
    tmp_path: Path,
    bcoin_node: BcoinNode,
    wallets: tuple[RegtestWallet, RegtestWallet],
    auth: None,
) -> None:
    import io

    from drainwatch.backfill import run_backfill

    hot, cold = wallets
    config = write_config(tmp_path, bcoin_node, hot, cold)
    running = Watch(config, start=None)  # started at the head: knows no coin
    try:
        running.step()
        assert running.balances() == {}
        out = io.StringIO()
        assert run_backfill(config, CHAIN, 0, None, workers=2, stream=out, err=out) == 0
        # The running watcher learns of the coins before its next block: a drain now is seen.
        drain = cold.send(bcoin_node, [(ATTACKER.address(), 100_000_000)])
        bcoin_node.mine(1, SINK_ADDRESS)
        running.step()
        transfers = running.transfers(drain.txid)
        assert ATTACKER.address() in {t.to_address for t in transfers}
        assert {t.status for t in transfers} == {TransferStatus.CONFIRMED}
        assert running.balances() == expected(hot, cold)
    finally:
        running.close()


def test_blocks_a_watcher_read_during_a_backfill_are_read_again_with_its_coins(
    tmp_path: Path,
    bcoin_node: BcoinNode,
    wallets: tuple[RegtestWallet, RegtestWallet],
    auth: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a backfill runs, the live watcher reads a block that drains a coin only the
    backfill knows of; once the backfill is done, the watcher goes back and reads it again."""
    import io

    from drainwatch import backfill as backfill_module
    from drainwatch.backfill import run_backfill

    hot, cold = wallets
    config = write_config(tmp_path, bcoin_node, hot, cold)
    running = Watch(config, start=None)
    drained: list[str] = []
    real_block = backfill_module.Replay.block

    def block_then_drain(self: backfill_module.Replay, events: list[object]) -> None:
        real_block(self, events)  # type: ignore[arg-type]
        if not drained and self.blocks == 10:  # mid-backfill: the drain, read by the watcher
            drained.append(cold.send(bcoin_node, [(ATTACKER.address(), 100_000_000)]).txid)
            bcoin_node.mine(1, SINK_ADDRESS)
            running.step()

    try:
        running.step()
        monkeypatch.setattr(backfill_module.Replay, "block", block_then_drain)
        out = io.StringIO()
        assert run_backfill(config, CHAIN, 0, None, workers=1, stream=out, err=out) == 0
        [drain] = drained
        assert ATTACKER.address() not in {t.to_address for t in running.transfers(drain)}
        running.step()  # the marker: back to the backfill's last block, the drain read again
        transfers = running.transfers(drain)
        assert ATTACKER.address() in {t.to_address for t in transfers}
        assert running.balances() == expected(hot, cold)
        assert any(a.tx_hash == drain for a in running.app.store.alerts())
    finally:
        running.close()
