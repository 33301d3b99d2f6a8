"""Shared fixtures. Tests use real processes; nothing here mocks Prometheus."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT.parent / "shared" / "agent_world" / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def examples_dir() -> Path:
    """The real Agent World example documents (shared/agent_world/examples)."""
    if not EXAMPLES.is_dir():
        pytest.fail(f"missing {EXAMPLES}: the shared/ folder must sit beside the checkout")
    return EXAMPLES
