"""Shared fixtures. Tests use real processes; nothing here mocks Prometheus."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Real Agent World example documents, copied into the repository (fixtures/agent_world/SOURCE.md).
EXAMPLES = FIXTURES / "agent_world"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def examples_dir() -> Path:
    """The real Agent World example documents (tests/fixtures/agent_world)."""
    return EXAMPLES


@pytest.fixture(scope="session")
def matrix_soaks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The gate matrix and the blind-spot soaks, run once for both test modules: two batches of
    real soaks side by side (tests/test_gate_matrix.py ``run_matrix``)."""
    from test_gate_matrix import run_matrix
    return run_matrix(tmp_path_factory.mktemp("matrix"))
