"""One handover model: a dump and a debugfs tree decode through one function.

The pure decoder on built bytes, then the fixtures: the dump of a boot and
the debugfs snapshot the guest took of the same boot give the same
``Handover`` (subtrees, views, metadata, chain), and ``kho-debugfs --json``
is the report form a dump gives.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import drgn
import pytest
from fixturedata import fixture_files, load_truth
from khobuild import kho_root_fdt, metadata_blob

from kho_drgn.chain import build_chain, format_chain
from kho_drgn.debugfs import debugfs_chain, debugfs_report, decode_debugfs
from kho_drgn.fdt import SubtreeRef
from kho_drgn.handover import BlobMissing, Handover, decode_handover
from kho_drgn.report import SCHEMA, kho_report, report_to_dict
from kho_drgn.state import KhoState, KhoStatus, kho_state, note_metadata_absent

MEMBLOCK_PHYS, METADATA_PHYS = 0x1299000, 0x248000
ROOT = kho_root_fdt(
    [("memblock", MEMBLOCK_PHYS, 210), ("kexec-metadata", METADATA_PHYS, 73)]
)


def codes(handover: Handover) -> list[str]:
    return [f.code for f in handover.all_findings()]


def test_fetcher_says_what_is_missing() -> None:
    """A blob the source should hold and does not is ``memory.missing``
    naming the sub-node; one the source does not show is left out."""
    asked: list[tuple[str, int]] = []

    def fetch(ref: SubtreeRef, size: int) -> bytes | None:
        asked.append((ref.name, size))
        if ref.name == "memblock":
            raise BlobMissing(f"at physical {ref.phys:#x} is not in the dump")
        return metadata_blob()

    handover = decode_handover("incoming", ROOT, fetch)
    assert asked == [("kexec-metadata", 73), ("memblock", 210)]
    assert handover.metadata is not None and handover.metadata.kexec_count == 2
    assert handover.views == []
    (missing,) = handover.findings
    assert missing.code == "memory.missing"
    assert missing.message == (
        "sub-node 'memblock': its data at physical 0x1299000 is not in the dump"
    )

    quiet = decode_handover("incoming", ROOT, lambda ref, size: None)
    assert quiet.metadata is None and quiet.views == [] and codes(quiet) == []


def test_subtrees_without_a_root_fdt() -> None:
    """debugfs without ``out/fdt``: the source's own subtrees are decoded as
    the FDT's would be; a subtree the FDT names is not listed twice."""
    blobs = {"kexec-metadata": metadata_blob(b"b", 3), "x": b"\1\2\3"}
    extra = [SubtreeRef(name, None, len(data)) for name, data in blobs.items()]

    def fetch(ref: SubtreeRef, size: int) -> bytes | None:
        data = blobs.get(ref.name)  # no file for memblock: not shown
        return None if data is None else data[:size]

    handover = decode_handover("outgoing", None, fetch, extra=extra)
    assert handover.fdt is None
    assert [s.name for s in handover.subtrees] == ["kexec-metadata", "x"]
    assert handover.metadata is not None
    assert (handover.metadata.previous_release, handover.metadata.blob_size) == (
        "b",
        73,
    )
    assert [(v.name, v.kind, v.size) for v in handover.views] == [("x", "raw", 3)]
    assert codes(handover) == []  # no root FDT: no metadata.absent either

    with_root = decode_handover("outgoing", ROOT, fetch, extra=extra)
    names = [s.name for s in with_root.subtrees]
    assert names == ["kexec-metadata", "memblock", "x"]  # FDT nodes newest first
    assert with_root.fdt is not None
    named = with_root.fdt.subtree("kexec-metadata")
    assert with_root.subtree("kexec-metadata") is named
    assert [v.name for v in with_root.views] == ["x"]


def test_bad_root_and_absent_metadata() -> None:
    """A root that is not an FDT is ``fdt.invalid`` worded by the source; a
    root FDT without kexec-metadata says so."""
    garbage = b"\xd0\x0d\xfe\xed" + b"\xff" * 60
    bad = decode_handover("incoming", garbage, lambda ref, size: None, root_what="x")
    assert [(f.code, f.message.split(":")[0]) for f in bad.findings] == [
        ("fdt.invalid", "x")
    ]
    no_md = kho_root_fdt([("memblock", MEMBLOCK_PHYS, 210)])
    handover = decode_handover("incoming", no_md, lambda ref, size: None)
    # The decoder leaves it to the state, which sees both handovers.
    assert codes(handover) == []
    state = KhoState(None, "7.2.13", KhoStatus.KEXEC, incoming=handover)
    note_metadata_absent(state)
    assert codes(handover) == ["metadata.absent"]
    assert state.findings == []
    # A debugfs kexec-metadata file the root FDT does not name is still the
    # handover's metadata: not absent.
    blob = metadata_blob(b"a", 2)
    extra = [SubtreeRef("kexec-metadata", None, len(blob))]
    with_file = decode_handover(
        "incoming", no_md, lambda ref, size: blob[:size], extra=extra
    )
    assert with_file.metadata is not None
    state = KhoState(None, "7.2.13", KhoStatus.KEXEC, incoming=with_file)
    note_metadata_absent(state)
    assert codes(with_file) == [] and state.findings == []


# --------------------------------------------------------------------------
# The fixtures: a dump and the debugfs snapshot of the same boot
# --------------------------------------------------------------------------

SAME_BOOT = ["chain-aab", "cold-b", "luo-in", "chain-ab"]


def open_dump(name: str) -> drgn.Program:
    vmcore, vmlinux = fixture_files(load_truth(name))
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    prog.load_debug_info([str(vmlinux)])
    return prog


@pytest.fixture(scope="module", params=SAME_BOOT)
def same_boot(request: pytest.FixtureRequest) -> Iterator[tuple[str, drgn.Program]]:
    yield request.param, open_dump(request.param)


def assert_same_handover(dump: Handover, tree: Handover) -> None:
    """What debugfs shows of a handover is what the dump holds."""
    where = dump.direction
    if tree.fdt is not None:  # in/fdt, or a whole out/fdt
        assert dump.fdt is not None, where
        assert tree.fdt.compatible == dump.fdt.compatible, where
        assert tree.fdt.memory_map_phys == dump.fdt.memory_map_phys, where
        assert tree.fdt.subtrees == dump.fdt.subtrees, where
    # Every blob the dump's FDT names is a file, with the same size.
    sizes = {s.name: s.size for s in tree.subtrees}
    assert sizes == {s.name: s.size for s in dump.subtrees}, where
    md, tree_md = dump.metadata, tree.metadata
    assert (md is None) == (tree_md is None), where
    if md is not None and tree_md is not None:
        for key in ("blob_size", "raw", "version", "previous_release", "kexec_count"):
            assert getattr(tree_md, key) == getattr(md, key), (where, key)
    assert {v.name for v in tree.views} == {v.name for v in dump.views}, where
    for view in tree.views:
        other = dump.view(view.name)
        assert other is not None, (where, view.name)
        for key in ("kind", "compatible", "size", "fields"):
            assert getattr(view, key) == getattr(other, key), (where, view.name, key)
        # Pointers inside a blob are followed only in memory: debugfs lists
        # what the blob holds itself (memblock's regions), the same.
        if view.entries:
            assert view.entries == other.entries, (where, view.name)
        assert {f.code for f in view.findings} <= {f.code for f in other.findings}


def chain_facts(state: KhoState) -> tuple[object, ...]:
    chain = build_chain(state)
    return (
        chain.status,
        chain.kexec_count,
        chain.previous_release,
        chain.next_release,
        chain.next_kexec_count,
        chain.kho_kexec,
        chain.predates_metadata,
        format_chain(chain, live=True),
    )


@pytest.mark.fixtures
def test_dump_and_debugfs_decode_alike(same_boot: tuple[str, drgn.Program]) -> None:
    name, prog = same_boot
    truth = load_truth(name)
    dump = kho_state(prog)
    tree = decode_debugfs(truth.debugfs)
    for direction in ("incoming", "outgoing"):
        dump_side, tree_side = getattr(dump, direction), getattr(tree, direction)
        assert (dump_side is None) == (tree_side is None), direction
        if dump_side is not None and tree_side is not None:
            assert_same_handover(dump_side, tree_side)
    # One chain: the dump's, from its KHO state alone (no log), is the tree's.
    from kho_drgn.debugfs import debugfs_kho_state

    assert chain_facts(debugfs_kho_state(tree, truth.release)) == chain_facts(dump)
    tree_chain, dump_chain = debugfs_chain(tree, truth.release), build_chain(dump)
    if dump_chain.predates_metadata:  # the dump also has kho_in to go by
        assert tree_chain.source == "the incoming FDT (no kexec-metadata before 7.1)"
    else:
        assert tree_chain.source == dump_chain.source


def conforms(value: Any, form: Any, path: str = "") -> None:
    """``value`` has the JSON form of ``form`` (a dump's report): the same
    keys at every level, lists of like items, values of the same JSON type;
    null on either side is allowed (a part not read from that source)."""
    if value is None or form is None:
        return
    if path.endswith((".fields", ".entries")):  # each format's own keys
        assert isinstance(value, type(form)), path
        return
    if isinstance(form, dict):
        assert isinstance(value, dict), path
        assert set(value) == set(form), (path, set(value) ^ set(form))
        for key in form:
            conforms(value[key], form[key], f"{path}.{key}")
    elif isinstance(form, list):
        assert isinstance(value, list), path
        if form:
            for item in value:
                conforms(item, form[0], f"{path}[]")
    elif isinstance(form, bool):
        assert isinstance(value, bool), path
    elif isinstance(form, (int, float)):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), path
    else:
        assert isinstance(value, type(form)), path


def kho_debugfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kho_drgn.debugfs_cli", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.fixtures
def test_kho_debugfs_json_is_the_report_form(
    same_boot: tuple[str, drgn.Program], tmp_path: Path
) -> None:
    name, prog = same_boot
    truth = load_truth(name)
    for path, data in truth.debugfs.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    proc = kho_debugfs("--root", str(tmp_path / "kho"), "--json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    printed = json.loads(proc.stdout)
    form = report_to_dict(kho_report(prog))
    assert printed["schema"] == form["schema"] == SCHEMA
    conforms(printed, form)
    assert printed["target"]["kind"] == "debugfs"
    assert printed["target"]["path"] == str(tmp_path / "kho")
    assert printed["crash"] is None and printed["luo"] is None
    # The KHO part is the dump's: the same chain, subtrees and metadata.
    for key in ("kexec_count", "previous_release", "next", "kho_kexec"):
        assert printed["chain"][key] == form["chain"][key], key
    for side in ("incoming", "outgoing"):
        got, want = printed["kho"][side], form["kho"][side]
        assert (got is None) == (want is None)
        if got is None:
            continue
        if want["kexec_metadata"] is not None:  # 7.1+; the layout from DWARF
            assert got["kexec_metadata"] == {**want["kexec_metadata"], "layout": "abi"}
        else:
            assert got["kexec_metadata"] is None
        names = {s["name"]: s["blob_size"] for s in got["subtrees"]}
        assert names == {s["name"]: s["blob_size"] for s in want["subtrees"]}
    # The same dictionary as in-process, and text from the same renderer.
    in_process = report_to_dict(
        debugfs_report(decode_debugfs(truth.debugfs, root=str(tmp_path / "kho")), None)
    )
    assert in_process == printed
    text = kho_debugfs("--root", str(tmp_path / "kho"))
    assert text.stdout.startswith(f"kexec chain: {printed['chain']['line']}\n")
    for title in ("Handover FDTs", "Subtrees", "kexec-metadata"):
        assert f"\n{title}\n" in text.stdout, title
