"""Shared fixtures. Tests use real processes; nothing here mocks Prometheus."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Real Agent World example documents, copied into the repository (fixtures/agent_world/SOURCE.md).
EXAMPLES = FIXTURES / "agent_world"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def assert_golden(path: Path, text: str) -> None:
    """``text`` equals the golden file at ``path`` (SOAK_UPDATE_GOLDEN=1 writes it instead)."""
    if os.environ.get("SOAK_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with SOAK_UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(), f"{path.name} differs from the golden file (SOAK_UPDATE_GOLDEN=1 to accept)"


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


# Test files that run real soaks for minutes: collected first, so that pytest-xdist (the default
# options run `-n 3 --dist loadgroup`) starts the longest work at once rather than at the end.
LONG_FIRST = ("test_gate_matrix", "test_gate_matrix_blind_spots", "test_soak_e2e", "test_runner_g2",
              "test_g2_gates", "test_chaos_degraded", "test_alerts_live")


@pytest.hookimpl(tryfirst=True)   # before xdist's own hook turns the groups into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test of one file runs on one xdist worker (its module fixtures run once), and the gate
    matrix's two files share one group (their session fixture ``matrix_soaks`` runs once)."""
    def group(item: pytest.Item) -> str:
        return "matrix_soaks" if "matrix_soaks" in getattr(item, "fixturenames", ()) else item.path.stem

    def rank(item: pytest.Item) -> int:
        stem = item.path.stem
        return LONG_FIRST.index(stem) if stem in LONG_FIRST else len(LONG_FIRST)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))
    items.sort(key=rank)   # stable: the order inside a file is kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Tests that build topologies in this process (runner.chaos.ChaosEngine) leave their nodes'
    empty cgroups behind, as a run would until its end: this test process removes them (and
    any nft table it owns) at its own end, so a suite leaves nothing on the machine."""
    from runner import netcut
    if netcut.available() is None:   # root and nft: what the network tests need anyway
        netcut.heal_owned(os.getpid())
