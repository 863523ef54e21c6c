"""The debugfs reader on the fixtures' real snapshots, written out as trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixturedata import DUMPS, Truth, load_truth

from kho_drgn.debugfs import (
    DebugfsState,
    DebugfsUnavailable,
    debugfs_chain,
    debugfs_report,
    decode_debugfs,
    read_debugfs_files,
)
from kho_drgn.report import SCHEMA, report_to_dict

SNAPSHOTS = [name for name in DUMPS if name != "kdump"]


def as_json(state: DebugfsState, release: str | None) -> dict[str, Any]:
    """kho-debugfs's JSON: the report form, as for a dump."""
    data = report_to_dict(debugfs_report(state, release))
    json.dumps(data)  # JSON-ready
    return data


def chain_line(state: DebugfsState, release: str | None) -> str:
    return debugfs_report(state, release).chain_line


def write_tree(truth: Truth, root: Path) -> Path:
    """The snapshot as a directory tree, like /sys/kernel/debug/kho."""
    for path, data in truth.debugfs.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root / "kho"


def kho_debugfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kho_drgn.debugfs_cli", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module", params=SNAPSHOTS)
def snapshot(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Truth, Path]:
    truth = load_truth(request.param)
    return truth, write_tree(truth, tmp_path_factory.mktemp(truth.name))


@pytest.mark.fixtures
def test_snapshot_decodes_like_the_truth(snapshot: tuple[Truth, Path]) -> None:
    truth, root = snapshot
    if not truth.kho_enabled:
        # kho=off: the kernel creates no kho directory at all.
        assert not truth.debugfs
        with pytest.raises(DebugfsUnavailable, match="kho=off"):
            read_debugfs_files(root)
        return
    state = decode_debugfs(read_debugfs_files(root), "little", str(root))
    report = as_json(state, truth.release)
    assert report["schema"] == SCHEMA and report["target"]["kind"] == "debugfs"
    codes = {f["code"] for f in report["findings"]}
    assert not [f for f in report["findings"] if f["severity"] == "error"]
    for side, expected in (("incoming", truth.incoming), ("outgoing", truth.outgoing)):
        got = report["kho"][side]
        if expected is None:
            assert got is None
            continue
        subtrees = {s["name"]: s for s in got["subtrees"]}
        assert set(subtrees) == set(expected.subtrees)
        views = {n: s["decoded"] for n, s in subtrees.items() if s["decoded"]}
        md = got["kexec_metadata"]
        for key in ("version", "previous_release", "kexec_count", "blob_size"):
            assert md[key] == expected.metadata[key], key
        assert subtrees["kexec-metadata"]["blob_size"] == expected.metadata["blob_size"]
        if "memblock" in views:
            assert views["memblock"]["kind"] == "memblock"
            assert [e["name"] for e in views["memblock"]["entries"]] == ["khotest"]
            assert views["memblock"]["entries"][0]["size"] == 1 << 20
        if "kho_test" in views:
            assert views["kho_test"]["kind"] == "kho-test"
            assert views["kho_test"]["fields"]["magic"] == 0x4B484F21
    if truth.outgoing is None:
        assert "debugfs.empty" in codes
        return
    scratch = report["kho"]["scratch"]
    assert scratch["areas"] and all(a["addr"] for a in scratch["areas"])
    assert scratch["count"] == len(scratch["areas"])
    if truth.incoming is not None:
        # 7.2.13 quirk: a KHO-booted kernel has no out/fdt.
        assert "debugfs.no-out-fdt" in codes
        assert report["kho"]["outgoing"]["fdt_file_size"] is None
        incoming = report["kho"]["incoming"]
        assert incoming["compatible"] == "kho-v4"
        assert incoming["fdt_size"] == incoming["fdt_file_size"]
        for sub in incoming["subtrees"]:  # named by the FDT: its addresses
            assert sub == {**sub, **truth.incoming.subtrees[sub["name"]]}
    else:
        # 7.2.13 quirk: a cold boot's out/fdt is cut at its size at init.
        assert "debugfs.fdt-truncated" in codes
        out = report["kho"]["outgoing"]
        assert out["fdt_file_size"] < out["fdt_size"]
        assert out["compatible"] is None
        assert {s["preserved_data"] for s in out["subtrees"]} == {None}


@pytest.mark.fixtures
def test_chain_line_matches_the_dump(snapshot: tuple[Truth, Path]) -> None:
    truth, root = snapshot
    state = decode_debugfs(truth.debugfs, "little", str(root))
    line = chain_line(state, truth.release)
    if truth.name == "chain-aab":
        assert line == (
            "cold boot -> (1 kexec) -> 7.2.13-kho-a -> 7.2.13-kho-b "
            "[running, kexec #2] -> next: 7.2.13-kho-b, count 3"
        )
    elif truth.name == "cold-b":
        assert line == (
            "cold boot -> 7.2.13-kho-b [running, cold boot] -> next: 7.2.13-kho-b, "
            "count 1"
        )
    else:
        assert "chain unknown" in line


@pytest.mark.fixtures
def test_debugfs_chain_is_the_dumps_chain(snapshot: tuple[Truth, Path]) -> None:
    """One chain model: debugfs gives the dump's chain, source and checks."""
    truth, root = snapshot
    state = decode_debugfs(truth.debugfs, "little", str(root))
    chain = debugfs_chain(state, truth.release)
    data = as_json(state, truth.release)
    assert data["chain"]["line"] == chain_line(state, truth.release)
    assert data["chain"]["kexec_count"] == chain.kexec_count
    if truth.name == "chain-aab":
        assert (chain.previous_release, chain.kexec_count) == ("7.2.13-kho-a", 2)
        assert chain.source == "incoming kexec-metadata blob"
        assert data["chain"]["next"] == {"release": "7.2.13-kho-b", "kexec_count": 3}
    # Consistent handover data: no cross-check fails.
    assert not [f for f in chain.findings if f.code.startswith("check.")]


def test_debugfs_cross_checks_are_the_dumps() -> None:
    """An outgoing count that is not incoming + 1 fails the dump's own check."""
    from kho_drgn.abi import KEXEC_METADATA_V1

    def blob(release: str, count: int) -> bytes:
        raw = bytearray(KEXEC_METADATA_V1.size)
        raw[0:4] = (1).to_bytes(4, "little")
        name = release.encode()
        offset = KEXEC_METADATA_V1.release_offset
        raw[offset : offset + len(name)] = name
        count_at = KEXEC_METADATA_V1.count_offset
        raw[count_at : count_at + 4] = count.to_bytes(4, "little")
        return bytes(raw)

    state = decode_debugfs(
        {
            "in/sub_fdts/kexec-metadata": blob("a", 2),
            "out/sub_fdts/kexec-metadata": blob("b", 7),
        }
    )
    chain = debugfs_chain(state, "b")
    assert (chain.previous_release, chain.kexec_count) == ("a", 2)
    assert "check.outgoing-count" in {f.code for f in state.all_findings()}
    assert "cross-check" in chain_line(state, "b")


@pytest.mark.fixtures
def test_cli_text_and_json(snapshot: tuple[Truth, Path]) -> None:
    truth, root = snapshot
    text = kho_debugfs("--root", str(root), "--release", truth.release)
    if not truth.kho_enabled:
        assert text.returncode == 3 and "kho=off" in text.stderr
        return
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    assert text.stdout.startswith("kexec chain: ")
    printed = kho_debugfs("--root", str(root), "--json")
    assert printed.returncode == 0, printed.stderr
    data: dict[str, Any] = json.loads(printed.stdout)
    assert data["schema"] == SCHEMA
    assert data["target"]["kind"] == "debugfs"


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DebugfsUnavailable, match="does not exist"):
        read_debugfs_files(tmp_path / "nope")
    proc = kho_debugfs("--root", str(tmp_path / "nope"))
    assert proc.returncode == 3
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    secret = tmp_path / "in" / "fdt"
    secret.write_bytes(b"x")
    secret.chmod(0)
    with pytest.raises(DebugfsUnavailable, match="permission denied"):
        read_debugfs_files(tmp_path)


def test_damaged_files_are_findings_not_crashes() -> None:
    files = {
        # a header that fits the file, then garbage
        "in/fdt": b"\xd0\x0d\xfe\xed\x00\x00\x00\x40" + b"\xff" * 56,
        "in/sub_fdts/kexec-metadata": b"\x02\x00\x00\x00",
        "in/sub_fdts/memblock": b"\xd0\x0d\xfe\xed\x00\x00",
        "out/scratch_phys": b"0x1000\nzz\n",
        "out/scratch_len": b"0x1000\n",
    }
    state = decode_debugfs(files)
    codes = {f.code for f in state.all_findings()}
    assert "fdt.invalid" in codes
    assert "debugfs.scratch-mismatch" in codes
    assert "debugfs.no-out-fdt" in codes
    assert state.incoming is not None
    assert {s.name for s in state.incoming.subtrees} == {"kexec-metadata", "memblock"}
    assert [v.name for v in state.incoming.views] == ["memblock"]
    assert state.incoming.metadata is not None and not state.incoming.metadata.valid
    # Worded as for a dump: the incoming metadata is unreadable.
    assert chain_line(state, "x").startswith(
        "? -> (unknown previous kernel) -> x [running, kexec #?]"
    )
    as_json(state, None)


def test_empty_tree() -> None:
    state = decode_debugfs({})
    assert [f.code for f in state.all_findings()] == ["debugfs.empty"]


def hostile_tree(root: Path) -> Path:
    """A debugfs copy with what debugfs never holds: a FIFO, a link to
    /dev/zero, a link to a directory, a socket; and a blob whose name and
    bytes carry terminal control sequences."""
    import socket

    (root / "in" / "sub_fdts").mkdir(parents=True)
    (root / "out").mkdir()
    os.mkfifo(root / "in" / "fdt")
    (root / "out" / "fdt").symlink_to("/dev/zero")
    (root / "out" / "sub_fdts").symlink_to("/")
    (root / "in" / "sub_fdts" / "evil\x1b]0;pwn\x07\r").write_bytes(b"7\x1b[2J")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "out" / "s"))
    except OSError:
        pass  # path too long for AF_UNIX on some hosts: the rest still holds
    finally:
        sock.close()
    return root


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    """FIFOs, links and sockets are skipped, never opened (no hang), and each
    is an error finding naming the entry and what it is."""
    from kho_drgn.debugfs import read_debugfs_tree

    tree = read_debugfs_tree(hostile_tree(tmp_path))
    assert list(tree.files) == ["in/sub_fdts/evil\x1b]0;pwn\x07\r"]
    assert tree.skipped["in/fdt"] == "a FIFO, not a regular file"
    assert tree.skipped["out/fdt"] == "a symbolic link (not followed)"
    assert tree.skipped["out/sub_fdts"] == "a symbolic link (not followed)"
    if (tmp_path / "out" / "s").exists():
        assert tree.skipped["out/s"] == "a socket, not a regular file"
    state = decode_debugfs(tree.files, "little", str(tmp_path), tree.skipped)
    skipped = [f for f in state.all_findings() if f.code == "debugfs.entry-skipped"]
    assert len(skipped) == len(tree.skipped)
    assert all(f.severity.value == "error" for f in skipped)
    assert " (!) " in chain_line(state, "x")


def test_hostile_tree_cli(tmp_path: Path) -> None:
    root = hostile_tree(tmp_path)
    proc = kho_debugfs("--root", str(root))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "'in/fdt' was not read: a FIFO" in proc.stdout
    controls = {c for c in proc.stdout if not c.isprintable() and c != "\n"}
    assert not controls, controls
    assert "evil\\x1b]0;pwn\\a\\r" in proc.stdout
    assert kho_debugfs("--root", str(root), "--strict").returncode == 1
    data = json.loads(kho_debugfs("--root", str(root), "--json").stdout)
    names = {s["name"] for s in data["kho"]["incoming"]["subtrees"]}
    assert names == {"evil\x1b]0;pwn\x07\r"}  # JSON keeps the exact name


def test_root_that_is_not_a_directory(tmp_path: Path) -> None:
    """A file, a FIFO or a link to /dev/zero as --root: said what it is,
    exit 2 (bad argument), nothing opened."""
    from kho_drgn.debugfs import DebugfsRootError

    regular = tmp_path / "passwd"
    regular.write_text("root:x:0:0::/root:/bin/sh\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    for path, kind in (
        (regular, "a regular file"),
        (fifo, "a FIFO"),
        (zero, "a character device"),
    ):
        with pytest.raises(DebugfsRootError, match=f"is {kind}, not a directory"):
            read_debugfs_files(path)
        proc = kho_debugfs("--root", str(path))
        assert proc.returncode == 2, proc.stderr
        assert f"is {kind}, not a directory" in proc.stderr
        assert "does not exist" not in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_subdirectory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "in" / "sub_fdts").mkdir(parents=True)
    (tmp_path / "in" / "sub_fdts").chmod(0)
    try:
        with pytest.raises(DebugfsUnavailable, match="permission denied"):
            read_debugfs_files(tmp_path)
        proc = kho_debugfs("--root", str(tmp_path))
        assert proc.returncode == 3 and "permission denied" in proc.stderr
    finally:
        (tmp_path / "in" / "sub_fdts").chmod(0o755)


def test_tree_of_only_special_files_is_not_called_disabled(tmp_path: Path) -> None:
    """A FIFO at in/fdt and a link at out/fdt: the sides exist but could not
    be read; not "neither in/ nor out/" (which means KHO disabled)."""
    from kho_drgn.debugfs import read_debugfs_tree

    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "in" / "fdt")
    (tmp_path / "out" / "fdt").symlink_to("/dev/zero")
    tree = read_debugfs_tree(tmp_path)
    assert tree.files == {}
    state = decode_debugfs(tree.files, "little", str(tmp_path), tree.skipped)
    codes = [f.code for f in state.all_findings()]
    assert codes == ["debugfs.entry-skipped", "debugfs.entry-skipped"]
    assert state.incoming is not None and state.outgoing is not None
    assert "KHO disabled" not in chain_line(state, "x")
