"""Tiny contracts for the drill and the tests, assembled by hand (no compiler needed).

They are deliberately minimal: a watcher reads what a contract *does* on chain (its logs, its
internal calls), not what its source says, so a contract that does exactly that one thing is a
faithful stand-in for a token or a contract wallet.
"""

from __future__ import annotations

# Runtime code PUSH1 0 PUSH1 0 REVERT behind a constructor that returns it: every call reverts.
REVERTER_INITCODE = "0x6460006000fd6000526005601bf3"

TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def _initcode(runtime: str) -> str:
    """A constructor that returns ``runtime``: PUSH1 len DUP1 PUSH1 11 PUSH1 0 CODECOPY
    PUSH1 0 RETURN (11 bytes, hence the code offset 11)."""
    size = len(runtime) // 2
    return f"0x60{size:02x}80600b6000396000f3{runtime}"


# A minimal "token": calldata (to, amount) emits the ERC-20 Transfer(caller, to, amount) log.
# No balances: the watcher only reads logs. MSTORE(0, amount); LOG3(0, 32, T, caller, to).
EMITTER_INITCODE = _initcode(
    "602035600052" + "600035" + "33" + "7f" + TRANSFER_TOPIC + "60206000a300"
)

# Forwards its call value to the address in calldata: CALL(gas, to, callvalue, 0, 0, 0, 0),
# an internal transfer that only traces show.
FORWARDER_INITCODE = _initcode("600060006000600034600035" + "5af100")

APPROVAL_TOPIC = "8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
ADDED_OWNER_TOPIC = "9465fa0c962cc76958e6373a993326400c1c94f8be2fe3a952adfa7f60b2ea26"
EIP1967_SLOT = "360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc"

# An "approving token": calldata (spender, amount) emits Approval(caller, spender, amount).
APPROVER_INITCODE = _initcode(
    "602035600052" + "600035" + "33" + "7f" + APPROVAL_TOPIC + "60206000a300"
)

# A "multisig" whose every call reports an owner added, Safe 1.3 style (owner in the data):
# MSTORE(0, calldata[0:32]); LOG1(0, 32, AddedOwner).
OWNER_ADDER_INITCODE = _initcode("600035600052" + "7f" + ADDED_OWNER_TOPIC + "60206000a100")


def slot_writer_initcode(slot_hex: str) -> str:
    """A contract whose every call writes calldata[0:32] into storage ``slot`` and says nothing:
    an upgrade that no log filter sees. SSTORE(slot, calldata[0:32])."""
    return _initcode("600035" + "7f" + slot_hex.rjust(64, "0") + "5500")


# The drill's stablecoin, called through the real ERC-20 selectors (so that a pending call is read
# from its calldata like any token's): ``transfer(to, amount)`` and ``approve(spender, amount)``
# emit Transfer(caller, to, amount) and Approval(caller, spender, amount) and return true; any
# other call reverts. No balances: the watcher only reads logs.
TRANSFER_SELECTOR = "a9059cbb"  # transfer(address,uint256)
APPROVE_SELECTOR = "095ea7b3"  # approve(address,uint256)


def _emit_and_return_true(topic: str) -> str:
    """JUMPDEST; MSTORE(0, calldata[36:68]); LOG3(0, 32, topic, caller, calldata[4:36]);
    MSTORE(0, 1); RETURN(0, 32)."""
    return (
        "5b" + "602435600052" + "600435" + "33" + "7f" + topic + "60206000a3"
        "6001600052" + "60206000f3"
    )


def _token_runtime() -> str:
    # selector = calldata[0:32] >> 224; JUMPI to each branch on EQ; otherwise REVERT(0, 0).
    dispatch_size = 29  # the bytes before the first branch, as laid out below
    transfer_at = dispatch_size
    approve_at = transfer_at + len(_emit_and_return_true(TRANSFER_TOPIC)) // 2
    dispatch = (
        "600035" + "60e01c"
        "80" + "63" + TRANSFER_SELECTOR + "14" + f"60{transfer_at:02x}" + "57"
        "63" + APPROVE_SELECTOR + "14" + f"60{approve_at:02x}" + "57"
        "600080fd"
    )
    assert len(dispatch) // 2 == dispatch_size
    return dispatch + _emit_and_return_true(TRANSFER_TOPIC) + _emit_and_return_true(APPROVAL_TOPIC)


TOKEN_INITCODE = _initcode(_token_runtime())

# A contract wallet that pays from its own balance: calldata (to, amount) makes it CALL(gas, to,
# amount, 0, 0, 0, 0), with no check of who asks (the flaw the drill's attacker uses). The
# transaction that calls it carries no value: only its call trace shows the payment. Plain value
# sent to it (no calldata) is kept: a CALL of 0 to the zero address moves nothing.
VAULT_INITCODE = _initcode("6000600060006000602035600035" + "5af100")


def _word(address_or_amount: str | int) -> str:
    if isinstance(address_or_amount, int):
        return f"{address_or_amount:064x}"
    return address_or_amount.lower().removeprefix("0x").rjust(64, "0")


def token_call(selector: str, to: str, amount: int) -> str:
    """Calldata of the drill token's ``transfer`` or ``approve``."""
    return "0x" + selector + _word(to) + _word(amount)


def vault_payment(to: str, amount: int) -> str:
    """Calldata that makes the vault pay ``amount`` wei to ``to``."""
    return "0x" + _word(to) + _word(amount)
