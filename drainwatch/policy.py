"""The config's rule sections → the rules' ``RulePolicy``, and its label sources → a
``LabelBook``. Called by the wiring only (nothing else reads the settings)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alerts.rules import RulePolicy
from drainwatch.model import Severity
from graph.labels import LabelBook, load_labels

if TYPE_CHECKING:
    from drainwatch.config import Settings


def rule_policy(settings: Settings) -> RulePolicy:
    rules = settings.alerts.rules
    cold, control = rules.cold_outflow, rules.control_changes
    balance, labelled = rules.balance_fall, rules.labelled_destination
    return RulePolicy(
        cold_outflow=cold.enabled,
        cold_outflow_severity=Severity(cold.severity),
        cold_refill_requires_expectation=cold.refill_requires_expectation,
        control_changes=control.enabled,
        control_severity=Severity(control.severity),
        unplanned_outflow=rules.unplanned_outflow.enabled,
        unplanned_outflow_severity=Severity(rules.unplanned_outflow.severity),
        limits=rules.limits.enabled,
        limit_severity=Severity(rules.limits.severity),
        balance_fall=balance.enabled,
        balance_fall_severity=Severity(balance.severity),
        balance_fall_share_percent=balance.share_percent,
        balance_fall_window_seconds=balance.window_seconds,
        labelled_destination=labelled.enabled,
        labelled_destination_severity=Severity(labelled.severity),
        labelled_categories=frozenset(labelled.categories),
        # The configured tokens have decimals: ERC-20, so a pending approve(spender, 0) of
        # theirs is a revocation, not possibly an ERC-721 approval of token id 0.
        fungible_tokens=frozenset(
            (name, token.contract.lower())
            for name, chain in settings.chains.items()
            for token in chain.tokens
        ),
    )


def label_book(settings: Settings) -> LabelBook:
    """Every label source of the config, read now; ``ConfigError`` names a bad file's line."""
    return load_labels((settings.resolve_path(s.path), s.format) for s in settings.labels)
