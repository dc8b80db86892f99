"""Shared fixtures. Real servers, never mocks: PostgreSQL (tests/fixtures/postgres.py) and a
Kafka-protocol broker (tests/fixtures/kafka.py) are started or found by the fixtures themselves,
and a test that needs one fails with a message naming what is missing, never skips."""

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.kafka",
    "tests.fixtures.evm_nodes",
    "tests.fixtures.bitcoin_nodes",
    "tests.fixtures.solc",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared test data is missing: expected it at {SHARED_DATA}")
    return SHARED_DATA
