"""The repository keeps its promises: README's commands, CI, layout, console scripts."""
from __future__ import annotations

import re
import tomllib
from importlib import import_module

from conftest import ROOT

LAYOUT = ["pyproject.toml", "README.md", "exporter", "runner", "checker", "simulator", "alerts",
          "prometheus", "grafana", "tests", "scripts/p2p-longrun-soak.sh", "docker-compose.yml",
          ".ci/run", "docs"]


def _readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must start with a sh block holding the two commands"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_starts_with_a_main_command_and_a_test_command() -> None:
    main, tests = _readme_commands()
    assert main.startswith("bash scripts/setup.sh && python3 -m runner ")
    assert tests == "bash scripts/setup.sh && python3 -m pytest -q"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, tests = _readme_commands()
    assert tests in (ROOT / ".ci/run").read_text().splitlines()


def test_design_layout_exists() -> None:
    missing = [p for p in LAYOUT if not (ROOT / p).exists()]
    assert not missing, f"missing from the DESIGN.md layout: {missing}"


def test_every_console_script_points_at_an_importable_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"soak-sim", "soak-sim-g2", "soak-exporter", "soak-run", "soak-check", "soak-k8s"}
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(import_module(module), func)), target
