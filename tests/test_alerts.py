"""The gates as Prometheus rules: one definition, fresh generated files, accepted by the real
promtool and amtool, and every alert proven by `promtool test rules` (tests/rules/*.yml)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alerts.gates import GATES, gate_by_name
from alerts.generate import DEFAULT_RUNBOOK_BASE_URL, PLACEHOLDER_WEBHOOK, render, render_alertmanager_config, stale, write
from alerts.profiles import PROFILES
from soakcore.services import AMTOOL_BIN, PROMTOOL_BIN, find_binary
from soakcore.actions import DOWN

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts"
RULE_TESTS = sorted((Path(__file__).resolve().parent / "rules").glob("*.yml"))


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_checked_in_generated_files_equal_a_fresh_generation(tmp_path: Path) -> None:
    written = write(tmp_path)
    assert sorted(p.name for p in written) == ["RUNBOOK.md", "alertmanager.yml", "rules.yml"]
    for path in written:
        assert (ALERTS / path.name).read_text() == path.read_text(), f"{path.name} is stale: run python3 -m alerts"


def test_the_check_mode_names_a_stale_file_and_exits_1(tmp_path: Path) -> None:
    write(tmp_path)
    (tmp_path / "rules.yml").write_text("groups: []\n")
    assert stale(tmp_path) == ["rules.yml"]
    proc = run([sys.executable, "-m", "alerts", "--check", "--out", str(tmp_path)], cwd=ROOT)
    assert proc.returncode == 1 and "stale:" in proc.stderr and "rules.yml" in proc.stderr
    assert run([sys.executable, "-m", "alerts", "--check"], cwd=ROOT).returncode == 0


def test_promtool_accepts_the_generated_rules() -> None:
    proc = run([find_binary(PROMTOOL_BIN), "check", "rules", str(ALERTS / "rules.yml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_amtool_accepts_the_checked_in_and_a_rendered_alertmanager_config(tmp_path: Path) -> None:
    rendered = tmp_path / "alertmanager.yml"
    rendered.write_text(render_alertmanager_config("http://127.0.0.1:40123/alerts"))
    for config in (ALERTS / "alertmanager.yml", rendered):
        proc = run([find_binary(AMTOOL_BIN), "check-config", str(config)])
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "http://127.0.0.1:40123/alerts" in rendered.read_text()
    assert PLACEHOLDER_WEBHOOK not in rendered.read_text()


@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=critical", "alertname=SoakConsensusStalled"], "soak-webhook"),
    (["severity=warning", "alertname=SoakDistfsFailureReasonBurst"], "soak-webhook"),
    (["severity=info", "alertname=SoakChaosFaultActive"], "null"),
])
def test_alertmanager_routes_critical_and_warning_to_the_webhook_and_info_nowhere(
        labels: list[str], receiver: str) -> None:
    proc = run([find_binary(AMTOOL_BIN), "config", "routes", "test",
                f"--config.file={ALERTS / 'alertmanager.yml'}", *labels])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == receiver


def test_alertmanager_groups_by_run_and_topology_and_inhibits_node_alerts_during_chaos() -> None:
    config = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    assert config["route"]["group_by"] == ["alertname", "run_id", "topology"]
    (inhibit,) = config["inhibit_rules"]
    assert inhibit["equal"] == ["run_id", "topology", "node"]
    targets = re.search(r'alertname=~"(.*)"', inhibit["target_matchers"][0]).group(1).split("|")
    # Never-exempt gates must not be muted by chaos: a fork or a broken invariant always pages.
    assert "SoakConsensusForkDetected" not in targets and "SoakRewardInvariantViolated" not in targets
    assert "SoakProcessDown" in targets and "SoakProcessCrashed" not in targets
    # Challenge pressure does not take a node down: it must not mute that node's alerts.
    assert inhibit["source_matchers"] == ['alertname="SoakChaosFaultActive"', f'action=~"{"|".join(DOWN)}"']
    assert DOWN[:4] == ("restart", "kill", "pause", "disconnect") and "challenge_pressure" not in DOWN


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=[p.stem for p in RULE_TESTS])
def test_promtool_rule_unit_tests_pass(test_file: Path) -> None:
    proc = run([find_binary(PROMTOOL_BIN), "test", "rules", str(test_file)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_wrong_expectation_makes_the_promtool_unit_tests_fail(tmp_path: Path) -> None:
    # The rule tests can fail: the same file with one annotation changed is rejected.
    source = (RULE_TESTS[0].parent / "consensus.yml").read_text()
    broken = source.replace("for 1m 30s, not counting", "for 1m 31s, not counting").replace(
        "../../alerts/rules.yml", str(ALERTS / "rules.yml"))
    assert broken != source
    (tmp_path / "broken.yml").write_text(broken)
    proc = run([find_binary(PROMTOOL_BIN), "test", "rules", str(tmp_path / "broken.yml")])
    assert proc.returncode != 0 and "1m 31s" in proc.stdout + proc.stderr


_EXEMPT_NOW = " - time() > 0)"
_NODE_UNLESS = "unless on(run_id, topology, node) (max by (run_id, topology, node) (soak_chaos_exempt_until"
_EXCUSED = " - on(run_id, topology, node) increase(soak_consensus_height_regressions_excused_total[2m])"
_LAG_OUTLASTS = "lag that outlasts a disconnect fires once the 15s grace has passed"
_LAG_ONLY_DURING = "lag only during a disconnect is left out of the p95 on that node, and only on that node"
_PRESSURE_ONLY = "failures only under challenge pressure are exempt on that node and fire on an unexempt one"
_PRESSURE_OUTLASTS = "failures that outlast challenge pressure fire once its 330s grace has passed"
_BURST_GRACE = "a burst under challenge pressure is exempt and fires once the 330s grace has passed"
_RSS_GRACE = "RSS growth during a pause is exempt and fires once the 10s grace has passed"
_FD_GRACE = "fd growth during a disconnect is exempt and fires once the 15s grace has passed"
_DISK_GRACE = "disk growth during a restart is exempt and fires once the 15s grace has passed"
_DOWN_GRACE = "a process down during its restart is silent and fires if it stays down past the 15s grace"
_DOWN_NOT_EXEMPT = ("a process down longer than for fires, and a pause on it or a restart of another node "
                    "does not exempt it")
_LAG_OUTSIDE = "a node that believes it is in step but lags the topology fires on the outside view"
_LAG_STOPPED_UNDER_CRITICAL = ("a follower stopped on its own fires although the sequencer is under chaos the "
                               "whole time (its own view)")
_LAG_OUTSIDE_DISCONNECTED = ("the outside view of a disconnected node is left out too, and fires once the 15s "
                             "grace has passed")
_G2_ALERT_GRACE = "a critical alert during the node's own disconnect is exempt and fires once the 15s grace has passed"
_G2_PEERS_GRACE = "no replication peer while the node is partitioned is exempt and fires once the 15s grace has passed"
_G2_FINALITY_CRITICAL = "slow finality while a fault holds the sequencer is exempt on every node and fires after the grace"
_G2_APPLIES = "the G2 status gates are flagged only where they apply, never on a G1 topology"
_G2_ROOTS = "a second state root for an executed block fires at once even during a restart, and none stays silent"
# Wrong gates the rule tests must reject: what is wrong -> (rules.yml text -> wrong text, the
# tests in tests/rules that must fail against it). Each names a semantic the tests claim to prove.
RULE_MUTANTS = {
    "no exemption at all": (
        lambda r: r.replace(_EXEMPT_NOW, " - time() > 1e12)"),
        (_LAG_ONLY_DURING, _LAG_OUTSIDE_DISCONNECTED, _PRESSURE_ONLY, _BURST_GRACE, _RSS_GRACE, _FD_GRACE,
         _DISK_GRACE, _DOWN_GRACE, _G2_ALERT_GRACE, _G2_PEERS_GRACE, _G2_FINALITY_CRITICAL)),
    "every grace a minute longer (the old blanket grace)": (
        lambda r: r.replace(_EXEMPT_NOW, " - time() > -60)"),
        (_LAG_OUTLASTS, _PRESSURE_OUTLASTS, _BURST_GRACE, _RSS_GRACE, _FD_GRACE, _DISK_GRACE, _DOWN_GRACE)),
    "every grace 15s shorter": (
        lambda r: r.replace(_EXEMPT_NOW, " - time() > 15)"),
        (_LAG_ONLY_DURING, _BURST_GRACE, _RSS_GRACE, _FD_GRACE, _DISK_GRACE, _DOWN_GRACE)),
    "a fault exempts its whole topology": (
        lambda r: r.replace(_NODE_UNLESS, _NODE_UNLESS.replace(", node", "")),
        (_LAG_ONLY_DURING, _PRESSURE_ONLY, _DOWN_NOT_EXEMPT,
         "one reason taking over a third of the checks in 5m fires a warning after for")),
    "any action exempts every node gate": (
        lambda r: re.sub(r'soak_chaos_exempt_until_timestamp_seconds\{action=~"[^"]*"\}',
                         "soak_chaos_exempt_until_timestamp_seconds", r),
        ("a follower 10 blocks behind fires after for, under challenge pressure too, and a node in step stays silent",
         "a store lost late in a long run fires on the recent ratio while the cumulative one stays low, "
         "a disconnect exempting nothing",
         "a steady RSS is silent and a leak fires after warm-up and for",
         "disk growth fires after warm-up and for, and a pause or disconnect does not exempt it",
         _DOWN_NOT_EXEMPT)),
    "lag from the node's own view only": (
        lambda r: re.sub(r' or label_replace\(.*?"view", "outside", "", ""\)', "", r),
        (_LAG_OUTSIDE, _LAG_OUTSIDE_DISCONNECTED)),
    "a fault on a critical node excusing the followers' own view too": (
        lambda r: r.replace('"view", "own", "", "")', '"view", "own", "", "") unless on(run_id, topology) '
                            '(max by (run_id, topology) (soak_chaos_critical_exempt_until_timestamp_seconds) - time() > 0)'),
        (_LAG_STOPPED_UNDER_CRITICAL,)),
    "the G2 status gates flagged as missing data on G1 topologies": (
        lambda r: r.replace(" and on(run_id, topology) count by (run_id, topology) (soak_node_status_head_schema)", ""),
        (_G2_APPLIES,)),
    "state-root divergence read from the block hashes": (
        lambda r: r.replace('soak_consensus_hash_divergences_total{kind="execution_state_root"}',
                            'soak_consensus_hash_divergences_total{kind="block_hash"}'),
        (_G2_ROOTS,)),
    "excused regressions counted as real": (
        lambda r: r.replace(_EXCUSED, ""),
        ("an excused regression (both counters rise together during a restart) stays silent",)),
}


def _rule_tests_by_name() -> dict[str, dict]:
    return {case["name"]: case for path in RULE_TESTS for case in yaml.safe_load(path.read_text())["tests"]}


@pytest.mark.parametrize("mutant", RULE_MUTANTS, ids=list(RULE_MUTANTS))
def test_the_rule_tests_reject_gates_with_wrong_semantics(mutant: str, tmp_path: Path) -> None:
    mutate, must_fail = RULE_MUTANTS[mutant]
    rules = (ALERTS / "rules.yml").read_text()
    wrong = mutate(rules)
    assert wrong != rules, f"mutant {mutant!r} changed nothing: update it to the generated rules"
    (tmp_path / "rules.yml").write_text(wrong)
    cases = _rule_tests_by_name()
    assert set(must_fail) <= set(cases), "a named rule test no longer exists"
    (tmp_path / "mutant.yml").write_text(yaml.safe_dump({
        "rule_files": [str(tmp_path / "rules.yml")], "evaluation_interval": "15s",
        "tests": [cases[name] for name in must_fail]}, sort_keys=False))
    # The same tests pass against the real rules...
    (tmp_path / "real.yml").write_text((tmp_path / "mutant.yml").read_text().replace(
        str(tmp_path / "rules.yml"), str(ALERTS / "rules.yml")))
    real = run([find_binary(PROMTOOL_BIN), "test", "rules", str(tmp_path / "real.yml")])
    assert real.returncode == 0, real.stdout + real.stderr
    # ...and every one of them fails against the wrong ones.
    proc = run([find_binary(PROMTOOL_BIN), "test", "rules", str(tmp_path / "mutant.yml")])
    failed = set(re.findall(r"^\s*name: (.*),$", proc.stdout + proc.stderr, re.M))
    assert proc.returncode != 0 and set(must_fail) - failed == set(), proc.stdout + proc.stderr


def _expectations() -> tuple[set[str], set[str], set[str]]:
    """(alerts seen firing, alerts seen silent, gates seen flagged as insufficient) in tests/rules."""
    firing: set[str] = set()
    silent: set[str] = set()
    insufficient: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                (firing if expected else silent).add(check["alertname"])
                if check["alertname"] == "SoakGateInsufficientData":
                    insufficient |= {e["exp_labels"]["gate"] for e in expected}
    return firing, silent, insufficient


def test_every_gate_alert_is_seen_both_firing_and_silent_and_flagged_without_data() -> None:
    firing, silent, insufficient = _expectations()
    alerts = {g.alert for g in GATES}
    assert alerts - firing == set(), "alerts never seen firing in tests/rules"
    assert alerts - silent == set(), "alerts never seen silent in tests/rules"
    assert insufficient == {g.name for g in GATES}


def test_every_generated_alert_has_severity_gate_label_and_all_annotations() -> None:
    rules = yaml.safe_load(render()["rules.yml"])
    alerts = [r for group in rules["groups"] for r in group["rules"] if "alert" in r]
    gate_alerts = {r["alert"]: r for r in alerts if r["alert"].startswith("Soak") and "gate" in r["labels"]
                   and r["alert"] != "SoakGateInsufficientData"}
    assert set(gate_alerts) == {g.alert for g in GATES}
    for g in GATES:
        rule = gate_alerts[g.alert]
        assert rule["labels"] == {"severity": g.severity, "gate": g.name}
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert rule["annotations"]["runbook_url"] == f"{DEFAULT_RUNBOOK_BASE_URL}#{g.anchor}"
        assert rule["expr"] == g.breach and g.value in rule["expr"]


def test_gate_definitions_are_unique_named_and_their_thresholds_exist_in_every_profile() -> None:
    assert len({g.name for g in GATES}) == len(GATES) == len({g.alert for g in GATES})
    for g in GATES:
        assert re.fullmatch(r"[a-z]+(_[a-z0-9]+)+", g.name), g.name
        assert re.fullmatch(r"Soak([A-Z][a-z0-9]+)+", g.alert), g.alert
        assert g.severity in ("critical", "warning")
        assert gate_by_name(g.name) is g
        # The checker evaluates value over raw metrics (backfilled data has no recording rules).
        assert "soak:" not in g.value and "soak:" not in g.data
        for key in filter(None, (g.threshold_key,)):
            assert all(key in p.thresholds for p in PROFILES.values()), key
    with pytest.raises(KeyError):
        gate_by_name("no_such_gate")


def test_the_runbook_has_one_section_per_gate_with_its_anchor() -> None:
    runbook = (ALERTS / "RUNBOOK.md").read_text()
    for g in GATES:
        assert f'<a id="{g.anchor}"></a>\n## {g.alert}\n' in runbook
        assert g.runbook in runbook
    assert '<a id="insufficient-data"></a>' in runbook


def test_the_runbook_reads_as_text_with_units_not_templates_or_exponents() -> None:
    runbook = (ALERTS / "RUNBOOK.md").read_text()
    assert "{{" not in runbook and "$labels" not in runbook and "$value" not in runbook
    assert not re.search(r"\d\.\d+e[+-]\d+", runbook), "a number in exponent form"
    memory = runbook.split('<a id="soakmemorygrowthhigh"></a>')[1].split("<a id=")[0]
    assert "soak_smoke 128 MiB/h, soak_endurance 64 MiB/h, soak_release 32 MiB/h" in memory
    assert "soak_smoke 2m, soak_endurance 10m, soak_release 15m" in memory    # warm-up as durations
    stall = runbook.split('<a id="soakconsensusstalled"></a>')[1].split("<a id=")[0]
    assert "soak_smoke 5m, soak_endurance 7m, soak_release 10m" in stall
    assert "No node of *topology* committed a new block for *the measured time*" in stall
    ratio = runbook.split('<a id="soakdistfsfailureratiohigh"></a>')[1].split("<a id=")[0]
    assert "soak_smoke 25 %, soak_endurance 15 %, soak_release 10 %" in ratio


def test_runbook_urls_are_absolute_and_the_base_is_a_flag(tmp_path: Path) -> None:
    for group in yaml.safe_load((ALERTS / "rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            url = rule.get("annotations", {}).get("runbook_url")
            if url is not None:
                assert url.startswith(DEFAULT_RUNBOOK_BASE_URL + "#"), url
    base = (tmp_path / "RUNBOOK.md").as_uri()
    done = subprocess.run([sys.executable, "-m", "alerts", "--runbook-base-url", base, "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rules = yaml.safe_load((tmp_path / "rules.yml").read_text())
    urls = {r["alert"]: r["annotations"]["runbook_url"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert urls["SoakConsensusStalled"] == f"{base}#soakconsensusstalled"
    anchor = urls["SoakConsensusStalled"].split("#")[1]
    assert f'<a id="{anchor}"></a>' in (tmp_path / "RUNBOOK.md").read_text()
    for bad in ("alerts/RUNBOOK.md", "localhost:8080/RUNBOOK.md", f"{base}#x"):
        refused = subprocess.run([sys.executable, "-m", "alerts", "--runbook-base-url", bad, "--out", str(tmp_path)],
                                 cwd=ROOT, capture_output=True, text=True)
        assert refused.returncode == 2 and "--runbook-base-url" in refused.stderr, bad
    # The checked-in files never get a machine-specific base.
    refused = subprocess.run([sys.executable, "-m", "alerts", "--runbook-base-url", base], cwd=ROOT,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "--out" in refused.stderr
