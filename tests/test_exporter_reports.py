"""The report parser: real example documents, and property-based fuzzing of content."""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter import reports as reports_mod
from exporter.collector import Setup, SoakCollector, Source
from exporter.reports import Report, ReportError, parse_document, parse_report

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
G1 = json.loads((FIXTURES / "g1_storage" / "epoch-3.json").read_text())
C = "node_snapshot.consensus."
# Report attribute -> path in a G1 document, for the fields the gates use.
INT_FIELDS = {"observed_at_ms": "observed_at_unix_ms", "epoch_index": "settlement_report.epoch_index",
              "committed_height": C + "committed_height",
              "network_committed_height": C + "network_committed_height",
              "last_execution_height": C + "last_execution_height",
              "distfs_total": "distfs_probe_cursor_state.cumulative_total_checks",
              "distfs_failed": "distfs_probe_cursor_state.cumulative_failed_checks",
              "invariant_violations": "reward_asset_invariant_status.violation_count"}
STR_FIELDS = {"node_id": "node_snapshot.node_id", "last_block_hash": C + "last_block_hash"}
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**64), st.floats(allow_nan=False),
                      st.text(max_size=8), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                                  st.integers(), max_size=2))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        doc = doc[key]
    doc[last] = value


def test_the_real_examples_parse_and_name_what_the_slim_g2_document_lacks() -> None:
    storage = parse_report((FIXTURES / "g1_storage" / "epoch-3.json").read_bytes())
    assert (storage.committed_height, storage.distfs_total, storage.distfs_failed) == (4118, 17950, 2)
    assert storage.missing == ()
    slim = parse_report((FIXTURES / "g2_slim" / "epoch-7.json").read_bytes())
    assert (slim.epoch_index, slim.distfs_total, slim.distfs_failed, slim.committed_height) == (7, 412, 3, 2210)
    assert "reward_asset_invariant_status.ok" in slim.missing and slim.invariant_ok is None
    status = parse_document(json.loads((FIXTURES / "status" / "g2-chain-status.json").read_text()))
    assert (status.committed_height, status.last_status, status.distfs_total, status.invariant_ok) == (
        2210, "Committed", 412, True)


@pytest.mark.parametrize("data, reason", [
    (b"", "partial"), (b'{"observed_at_unix_ms": 1, "node', "partial"), (b"{]}", "invalid_json"),
    (b"\xff\xfe{}", "invalid_json"), (b"[1, 2]", "schema"), (b'{"observed_at_unix_ms": -1}', "schema"),
    (b'{"node_snapshot": {}}', "schema"), (b"[" * 100_000, "invalid_json")])
def test_bad_documents_raise_a_typed_error_with_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ReportError) as info:
        parse_report(data)
    assert info.value.reason == reason


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_a_report_error(data: bytes) -> None:
    try:
        parse_report(data)
    except ReportError as exc:
        assert exc.reason in {"partial", "invalid_json", "schema"}


def _expected(value: Any, kind: type) -> Any:
    """What the parser must return for ``value``, or ReportError if it must refuse the document."""
    if value is None:
        return None
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64
    else:
        ok = isinstance(value, kind)
    return value if ok else ReportError


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted({**INT_FIELDS, **STR_FIELDS})), ANY_VALUE, max_size=4))
def test_fuzzed_fields_are_either_refused_or_parsed_to_exactly_their_value(changes: dict[str, Any]) -> None:
    doc = copy.deepcopy(G1)
    kinds = {**{k: int for k in INT_FIELDS}, **{k: str for k in STR_FIELDS}}
    paths = {**INT_FIELDS, **STR_FIELDS}
    for attr, value in changes.items():
        _set(doc, paths[attr], value)
    expected = {attr: _expected(value, kinds[attr]) for attr, value in changes.items()}
    must_fail = ReportError in expected.values() or expected.get("observed_at_ms", 0) is None or \
        expected.get("committed_height", 0) is None
    try:
        report = parse_report(json.dumps(doc).encode())
    except ReportError as exc:
        assert must_fail and exc.reason == "schema", (changes, exc)
        return
    assert not must_fail, changes
    baseline = parse_report(json.dumps(G1).encode())
    for attr in paths:
        want = expected[attr] if attr in expected else getattr(baseline, attr)
        assert getattr(report, attr) == want, attr


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=200), st.builds(
    lambda changes: json.dumps({**G1, **changes}).encode(),
    st.dictionaries(st.sampled_from(sorted(G1)), ANY_VALUE, max_size=3))), min_size=1, max_size=6))
def test_a_folder_of_fuzzed_reports_never_breaks_the_scrape(files: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for i, data in enumerate(files):
            Path(tmp, f"epoch-{i}.json").write_bytes(data)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SoakCollector(Setup(sources=(Source("n", report_dir=tmp),)), settle_s=0.0))
        labels = {"run_id": "adhoc", "topology": "unknown"}
        assert registry.get_sample_value("soak_exporter_scrape_error", labels) == 0
        ok = registry.get_sample_value("soak_reports_total", {**labels, "node": "n"})
        bad = sum(registry.get_sample_value("soak_report_errors_total", {**labels, "node": "n", "reason": r}) or 0
                  for r in ("partial", "invalid_json", "schema", "too_large", "io"))
        assert ok + bad == len(files)
        parsed = []
        for data in files:
            try:
                parsed.append(parse_report(data))
            except ReportError:
                continue
        assert ok == len(parsed)
        if parsed:
            assert isinstance(parsed[-1], Report)
            assert registry.get_sample_value("soak_report_last_epoch_index", {**labels, "node": "n"}) == \
                parsed[-1].epoch_index


# -- orjson is only a faster path: the stdlib's answer counts (issue 12.3) -------------------
def _outcome(data: bytes) -> object:
    try:
        return parse_report(data)
    except ReportError as exc:
        return exc.reason


def _stdlib_outcome(data: bytes) -> object:
    saved = reports_mod._orjson
    reports_mod._orjson = None
    try:
        return _outcome(data)
    finally:
        reports_mod._orjson = saved


def test_orjson_is_installed_and_used_for_plain_reports() -> None:
    assert reports_mod._orjson is not None
    data = (FIXTURES / "g1_storage" / "epoch-3.json").read_bytes()
    assert reports_mod.decode(data) == json.loads(data)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
                       lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
                       max_leaves=12)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted({**INT_FIELDS, **STR_FIELDS})), JSONISH, max_size=3),
       st.sampled_from([b"", b"NaN", b"1e400", b"18446744073709551616", b'"\\ud800"', b"-9223372036854775809",
                        b"\xff", b"\xed\xa0\x80", b"1" * 5000]),
       st.integers(0, 40))
def test_orjson_and_the_stdlib_give_the_same_report_or_the_same_reason(changes: dict[str, Any], odd: bytes,
                                                                        cut: int) -> None:
    """Reports with fuzzed fields, with an unusual token spliced into an ignored field (NaN,
    huge numbers, lone surrogates, bad UTF-8, a 5000-digit integer), and cut short."""
    doc = copy.deepcopy(G1)
    paths = {**INT_FIELDS, **STR_FIELDS}
    for attr, value in changes.items():
        _set(doc, paths[attr], value)
    data = json.dumps(doc).encode()
    if odd:
        data = data[:-1] + b', "extra": ' + odd + b"}"
    for variant in (data, data[:len(data) - cut]):
        assert _outcome(variant) == _stdlib_outcome(variant), variant[-80:]


@pytest.mark.parametrize("data, reason", [
    (b'{"observed_at_unix_ms": 1, "x": ' + b"1" * 5000 + b"}", "invalid_json"),     # past int_max_str_digits
    (b'{"observed_at_unix_ms": 1, "x": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001, "invalid_json"),
    (b'{"observed_at_unix_ms": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid_json"),
    (b'{"observed_at_unix_ms": NaN, "node_snapshot": {"consensus": {"committed_height": 1}}}', "schema"),
    (b'{"observed_at_unix_ms": 18446744073709551616, "node_snapshot": {"consensus": {"committed_height": 1}}}',
     "schema"),
    (b'{"observed_at_unix_ms": 1, "node_snapshot": {"consensus": {"committed_height": 1}}, '
     b'"distfs_probe_cursor_state": {"cumulative_failure_reasons": {"TIMEOUT": 18446744073709551616}}}', "schema"),
])
def test_deep_nesting_huge_integers_and_nan_keep_their_reasons_with_orjson(data: bytes, reason: str) -> None:
    """A document nested 100,000 deep never reaches an orjson without a depth limit (old
    releases crash the process on it); it is the stdlib's 'nested too deeply'."""
    with pytest.raises(ReportError) as info:
        parse_report(data)
    assert info.value.reason == reason
    assert _stdlib_outcome(data) == reason


def test_a_nan_in_a_field_the_gates_ignore_is_accepted_as_before() -> None:
    data = json.dumps({**G1, "extra": float("nan")}).encode()
    assert b"NaN" in data
    assert parse_report(data) == parse_report(json.dumps(G1).encode())


def test_a_parsed_report_is_the_dataclass_its_constructor_would_build() -> None:
    """Reports and peer heads are built without the generated __init__ (speed): every field
    is set, and the result equals the constructor's."""
    from dataclasses import fields
    from exporter.reports import PeerHead
    r = parse_report((FIXTURES / "g1_storage" / "epoch-3.json").read_bytes())
    assert set(vars(r)) == {f.name for f in fields(Report)}
    assert r == Report(**{f.name: getattr(r, f.name) for f in fields(Report)})
    assert r.peer_heads and all(p == PeerHead(p.node_id, p.height, p.block_hash) for p in r.peer_heads)
