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
