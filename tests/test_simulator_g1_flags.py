"""soak-sim reads world_viewer_live's flags exactly as the real parser does: --bind is the
viewer's TCP port, gossip binds at the triad base port or at the role's own address, the
real rules and messages apply, and peers are learned from datagrams, so the old script's
star layout (the sequencer given only its own address) works the way it really does."""
from __future__ import annotations

import random
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from simulator import cli
from simulator.faults import FaultConfig, Faults
from simulator.flags import ParseError
from simulator.node import MAX_LEARNED_PEERS, PEER_TTL_MS, Node
from simulator.testing import COMMON, SimProcess, port_block, wait_until

H = "127.0.0.1"


def old_script_argv(topology: str, role: str | None, base: int, star: bool = True) -> list[str]:
    """The old soak script's launch (FORMATS.md): triad --bind case_base+10, gossip left at the
    default base port; triad_distributed gossip case_base+1..+3, --bind case_base+11..+13."""
    argv = ["triad_p2p_bootstrap", "--no-llm", "--reward-runtime-enable", "--reward-runtime-report-dir", "r",
            "--reward-runtime-epoch-duration-secs", "10", "--node-tick-ms", "200", "--topology", topology]
    if topology == "triad":
        return [*argv, "--node-id", "soak-triad", "--bind", f"{H}:{base + 10}"]
    i = cli.ROLES.index(role or "observer")
    argv += ["--node-role", role or "observer", "--node-id", "soak-td", "--bind", f"{H}:{base + 11 + i}",
             "--triad-sequencer-gossip", f"{H}:{base + 1}"]
    others = [r for r in cli.ROLES[1:] if not star or r == role]
    for r in others:
        argv += [f"--triad-{r}-gossip", f"{H}:{base + 1 + cli.ROLES.index(r)}"]
    return argv


@pytest.mark.parametrize("topology, role, star", [
    ("triad", None, True), ("triad_distributed", "sequencer", True), ("triad_distributed", "storage", True),
    ("triad_distributed", "observer", True), ("triad_distributed", "sequencer", False),
    ("triad_distributed", "observer", False),
])
def test_the_old_scripts_argv_and_a_full_mesh_parse(topology: str, role: str | None, star: bool) -> None:
    opts = cli.parse(old_script_argv(topology, role, 5610, star))
    if topology == "triad":
        assert (opts["bind"], opts["triad_gossip_base_port"]) == (f"{H}:5620", 5500)
        return
    bind, peers = cli.distributed_gossip(opts)
    assert bind == (H, 5611 + cli.ROLES.index(role or ""))
    if role == "sequencer":
        assert peers == ([] if star else [(H, 5612), (H, 5613)])  # a star: it learns its peers
    else:
        assert (H, 5611) in peers and bind not in peers


def test_defaults_are_the_real_nodes() -> None:
    opts = cli.parse([])
    assert (opts["bind"], opts["topology"], opts["triad_gossip_base_port"], opts["node_role"], opts["node_id"]) == (
        "127.0.0.1:5010", "triad", 5500, "observer", "viewer-live-node")
    assert cli.distributed_gossip(cli.parse(["--topology", "triad_distributed", "--triad-sequencer-gossip",
                                             "127.0.0.1:7000", "--triad-observer-gossip", "127.0.0.1:7002"]))[0] \
        == (H, 7002)   # the default role is observer


TD = ["x", "--topology", "triad_distributed"]


@pytest.mark.parametrize("argv, message", [
    (["x", "--triad-sequencer-gossip", "127.0.0.1:1"],
     "--triad-*-gossip is only supported in --topology triad_distributed"),
    (["x", "--node-role", "storage"], "--node-role is only supported in --topology single"),
    (["x", "--node-validator", "a:1"], "--node-validator is only supported in --topology single"),
    (["x", "--node-gossip-bind", "127.0.0.1:1"], "--node-gossip-* is only supported in --topology single"),
    (["x", "--node-repl-libp2p-listen", "/ip4/127.0.0.1/tcp/1"],
     "--node-repl-libp2p-* is only supported in --topology single"),
    (["x", "--no-node"], "--topology triad requires embedded node runtime; remove --no-node or use --topology single"),
    (["x", "--triad-gossip-base-port", "0"], "--triad-gossip-base-port requires an integer in [1, 65533]"),
    (["x", "--triad-gossip-base-port", "65534"], "--triad-gossip-base-port requires an integer in [1, 65533]"),
    ([*TD], "--topology triad_distributed with --node-role observer requires --triad-observer-gossip <addr:port>"),
    ([*TD, "--node-role", "storage", "--triad-storage-gossip", "127.0.0.1:2"],
     "--topology triad_distributed with --node-role storage requires --triad-sequencer-gossip <addr:port>"),
    ([*TD, "--node-role", "storage", "--triad-sequencer-gossip", "127.0.0.1:2", "--triad-storage-gossip",
      "127.0.0.1:2"], "--topology triad_distributed requires --triad-storage-gossip distinct from "
                      "--triad-sequencer-gossip"),
    ([*TD, "--triad-sequencer-gossip", "127.0.0.1:2", "--triad-observer-gossip", "127.0.0.1:2"],
     "--topology triad_distributed requires --triad-observer-gossip distinct from --triad-sequencer-gossip"),
    ([*TD, "--node-role", "boss"], "--node-role must be one of: sequencer, storage, observer"),
    (["x", "y"], "unexpected argument: y"),
    (["x", "--pos-proposal-tick-phase", "10"], "--pos-proposal-tick-phase=10 must be less than --pos-ticks-per-slot=10"),
    (["x", "--reward-distfs-adaptive-backoff-base-ms", "5"],
     "--reward-distfs-adaptive-backoff-max-ms must be >= --reward-distfs-adaptive-backoff-base-ms"),
    (["x", "--bind"], "--bind requires an address"),
])
def test_each_rule_of_the_real_parser_is_enforced_with_its_message(argv: list[str], message: str) -> None:
    with pytest.raises(ParseError) as err:
        cli.parse(argv)
    assert str(err.value) == message


def test_the_sequencer_may_share_an_address_listed_for_another_role() -> None:
    """Only the process's own role is resolved (and only storage/observer are compared)."""
    opts = cli.parse([*TD, "--node-role", "sequencer", "--triad-sequencer-gossip", "127.0.0.1:2",
                      "--triad-storage-gossip", "127.0.0.1:2"])
    assert cli.distributed_gossip(opts) == ((H, 2), [])


def udp_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((H, port))
        except OSError:
            return True
    return False


def test_triad_binds_gossip_at_the_base_port_and_holds_bind_as_tcp(tmp_path: Path) -> None:
    base = port_block(5)
    proc = SimProcess("triad", tmp_path, [*COMMON, "--topology", "triad", "--node-id", "t", "--bind",
                                          f"{H}:{base + 3}", "--triad-gossip-base-port", str(base)], base,
                      status_port=base + 4)
    try:
        proc.start().wait_ready()
        assert [udp_taken(base + i) for i in range(4)] == [True, True, True, False]
        with socket.create_connection((H, base + 3), timeout=2):
            pass   # the viewer's TCP port is held
        wait_until(lambda: proc.height() > 5, 10, "triad commits")
    finally:
        assert proc.stop() == 0


def test_a_viewer_port_in_use_is_a_startup_error(tmp_path: Path) -> None:
    base = port_block(4)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((H, base + 3))
        taken.listen(1)
        proc = SimProcess("triad", tmp_path, [*COMMON, "--topology", "triad", "--node-id", "t", "--bind",
                                              f"{H}:{base + 3}", "--triad-gossip-base-port", str(base)], base)
        proc.start()
        assert proc.proc is not None and proc.proc.wait(15) == 1
    err = (tmp_path / "triad" / "stderr.log").read_text()
    assert f"failed to start live viewer server: --bind 127.0.0.1:{base + 3}: Address already in use" in err


@pytest.fixture
def star(tmp_path: Path) -> Iterator[dict[str, SimProcess]]:
    """The old script's star: every process gets the sequencer's address and its own only."""
    base = port_block(9)   # gossip +0..2, viewer +3..5, status +6..8
    procs = {}
    for i, role in enumerate(cli.ROLES):
        argv = [*COMMON, "--topology", "triad_distributed", "--node-role", role, "--node-id", "star",
                "--bind", f"{H}:{base + 3 + i}", "--triad-sequencer-gossip", f"{H}:{base}"]
        if role != "sequencer":
            argv += [f"--triad-{role}-gossip", f"{H}:{base + i}"]
        procs[role] = SimProcess(role, tmp_path, argv, base + i, status_port=base + 6 + i)
    try:
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def peer_ids(proc: SimProcess) -> set[str]:
    return {p["node_id"] for p in proc.reports()[-1]["node_snapshot"]["consensus"]["peer_heads"]}


def test_in_the_star_the_sequencer_learns_its_peers_and_they_never_meet(star: dict[str, SimProcess]) -> None:
    for p in star.values():
        p.start()
    for p in star.values():
        p.wait_ready()
    wait_until(lambda: all(p.height() > 5 for p in star.values()), 10, "followers commit via the sequencer")
    wait_until(lambda: all(len(p.reports()) >= 2 for p in star.values()), 10, "reports")
    assert peer_ids(star["sequencer"]) == {"star-storage", "star-observer"}
    assert peer_ids(star["storage"]) == {"star-sequencer"}     # no path to the observer
    assert peer_ids(star["observer"]) == {"star-sequencer"}
    # A restarted sequencer knows no one; it relearns its peers from their datagrams.
    assert star["sequencer"].stop() == 0
    stalled = star["storage"].height()
    star["sequencer"].start().wait_ready()
    wait_until(lambda: star["storage"].height() > stalled + 5 and star["observer"].height() > stalled + 5,
               10, "followers resume after the sequencer relearns them")


def test_learned_peers_expire_after_the_ttl_and_are_capped(tmp_path: Path) -> None:
    base = port_block(2)
    faults = Faults(FaultConfig(), tmp_path, random.Random(0))
    seq = Node("s-sequencer", "sequencer", "w", (H, base), [], tmp_path, faults, 0)
    sto = Node("s-storage", "storage", "w", (H, base + 1), [(H, base)], tmp_path, faults, 0)
    try:
        now = int(time.time() * 1000)
        sto.broadcast()
        wait_until(lambda: (seq.receive(now, 0), (H, base + 1) in seq.targets())[1], 5, "the sequencer learns")
        seq.forget(now + PEER_TTL_MS)
        assert (H, base + 1) in seq.targets()
        seq.forget(now + PEER_TTL_MS + 1)
        assert seq.targets() == []
        for i in range(MAX_LEARNED_PEERS + 5):
            seq.learn(("127.0.0.2", 1000 + i), now + i)
        assert len(seq.learned) == MAX_LEARNED_PEERS and ("127.0.0.2", 1000) not in seq.learned
    finally:
        seq.close()
        sto.close()


def test_simulator_only_switches_may_be_joined_with_equals_real_flags_may_not() -> None:
    opts = cli.parse(["x", "--fault-invariant-at-sec=20", "--seed=3"])
    assert (opts["fault_invariant_at_sec"], opts["seed"]) == (20.0, 3)
    with pytest.raises(ParseError, match="unexpected argument: --bind=127.0.0.1:1"):
        cli.parse(["x", "--bind=127.0.0.1:1"])
