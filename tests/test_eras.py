"""Other eras, the wrong era's vmlinux, and a 6.18 kernel never finalized.

Runs the real drgn CLI on the shared 6.18 and LUO dumps: with a vmlinux of
another kernel (drgn ignores it: BUILD-ID mismatch), and on a damaged copy of
the 6.18 dump whose ``kho_out.finalized`` is 0 and whose outgoing FDT page
holds garbage (what a kernel that never prepared a KHO kexec looks like).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import drgn
import pytest
from corruptdump import Damage, SparseSource, read_elf_core, write_sparse_copy
from fixturedata import CONTRIB_SCRIPT, cache_dir, fixture_files, load_truth

pytestmark = pytest.mark.fixtures


def run(*args: str) -> tuple[int, Any, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "drgn", "--quiet", *args, str(CONTRIB_SCRIPT), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout) if proc.returncode == 0 else None
    return proc.returncode, data, proc.stderr


def codes(report: Any) -> dict[str, str]:
    return {f["code"]: f["severity"] for f in report["findings"]}


@pytest.fixture(scope="module")
def not_finalized() -> Path:
    """chain-ab with kho_out.finalized = 0 and the outgoing FDT page garbage."""
    from drgn.helpers.linux.mm import follow_phys, page_to_virt, virt_to_phys

    vmcore, vmlinux = fixture_files(load_truth("chain-ab"))
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    prog.load_debug_info([str(vmlinux)])
    kho_out = prog["kho_out"]
    flag = follow_phys(
        prog["init_mm"].address_of_(), kho_out.finalized.address_
    ).value_()
    page = virt_to_phys(page_to_virt(kho_out.ser.fdt)).value_()
    core = read_elf_core(vmcore)
    damage = Damage(
        (
            (core.phys_to_offset(flag), b"\0"),
            (core.phys_to_offset(page, 4096), b"\xaa" * 4096),
        ),
        description="kho_out.finalized = 0, outgoing FDT page uninitialised",
    )
    out = cache_dir() / "corrupt" / "chain-ab.not-finalized.vmcore"
    return write_sparse_copy(SparseSource(vmcore), out, damage)


@pytest.mark.parametrize("debug", ["dwarf", "kallsyms"])
def test_not_finalized_is_normal(not_finalized: Path, debug: str) -> None:
    _, vmlinux = fixture_files(load_truth("chain-ab"))
    symbols = ("-s", str(vmlinux)) if debug == "dwarf" else ("--no-default-symbols",)
    status, report, stderr = run("-c", str(not_finalized), *symbols)
    assert status == 0, stderr
    found = codes(report)
    assert found["kho.not-finalized"] == "info"
    assert "fdt.invalid" not in found
    assert not [c for c, sev in found.items() if sev == "error"]
    kho = report["kho"]
    assert kho["status"] == "kexec" and kho["outgoing"] is None
    assert kho["incoming"]["compatible"] == "kho-v1"
    line = report["chain"]["line"]
    assert "KHO kexec: yes, count unknown" in line
    assert line.endswith("-> next: nothing prepared (KHO not finalized)")


WRONG_VMLINUX = [
    # dump, vmlinux of another kernel
    ("luo-in", "chain-ab"),
    ("chain-ab", "luo-in"),
    ("luo-in", "chain-aab"),  # same release 7.2.13, another build
]


@pytest.mark.parametrize(("dump", "other"), WRONG_VMLINUX)
def test_wrong_era_vmlinux(dump: str, other: str) -> None:
    """drgn refuses a vmlinux whose BUILD-ID differs: the kallsyms path then
    gives the same answer it gives without one, with symbols.no-dwarf."""
    truth = load_truth(dump)
    vmcore, _ = fixture_files(truth)
    _, vmlinux = fixture_files(load_truth(other))
    status, report, stderr = run("-c", str(vmcore), "-s", str(vmlinux))
    assert status == 0, stderr
    assert report["target"]["symbols"] == "kallsyms"
    assert codes(report)["symbols.no-dwarf"] == "warning"
    _, plain, _ = run("-c", str(vmcore), "--no-default-symbols")
    assert report["chain"] == plain["chain"]
    assert report["luo"] == plain["luo"]
    if truth.luo is not None:
        sessions = [s["name"] for s in report["luo"]["incoming"]["sessions"]]
        assert sessions == [s["name"] for s in truth.luo["incoming"]["sessions"]]


def test_luo_kallsyms_offsets_match_dwarf() -> None:
    """The 7.2 offsets the kallsyms path reads the LUO variables at are the
    ones the 7.2.13 vmlinux's DWARF gives."""
    from drgn import offsetof

    from kho_drgn.luo_target import LAYOUT_7_2 as L

    vmcore, vmlinux = fixture_files(load_truth("luo-in"))
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    prog.load_debug_info([str(vmlinux)])

    def off(type_name: str, member: str) -> int:
        return offsetof(prog.type(type_name), member)

    glob = prog["luo_global"].type_
    assert off_anon(glob, "luo_ser_out") == L.global_ser_out
    assert off_anon(glob, "liveupdate_num") == L.global_liveupdate_num
    sessions = "struct luo_session_global"
    assert off(sessions, "incoming") == L.sessions_incoming
    assert off(sessions, "outgoing") == L.sessions_outgoing
    header = "struct luo_session_header"
    assert off(header, "list") == L.header_list
    assert off(header, "block_set.head_pa") == L.header_head_pa
    flb = "struct luo_flb_global"
    assert off(flb, "incoming.header_ser") == L.flb_incoming_header
    assert off(flb, "outgoing.header_ser") == L.flb_outgoing_header
    session = "struct luo_session"
    assert off(session, "name") == L.session_name
    assert off(session, "list") == L.session_list
    assert off(session, "retrieved") == L.session_retrieved
    assert off(session, "file_set.files_list") == L.session_files_list
    file = "struct luo_file"
    assert off(file, "fh") == L.file_fh
    assert off(file, "serialized_data") == L.file_serialized_data
    assert off(file, "retrieve_status") == L.file_retrieve_status
    assert off(file, "list") == L.file_list
    assert off(file, "token") == L.file_token
    handler = "struct liveupdate_file_handler"
    assert off(handler, "compatible") == L.handler_compatible
    assert off(flb, "list") == L.flb_global_list
    lflb = "struct liveupdate_flb"
    assert off(lflb, "compatible") == L.flb_compatible
    assert off(lflb, "private.list") == L.flb_private_list
    assert off(lflb, "private.outgoing.count") == L.flb_out_count
    assert off(lflb, "private.outgoing.data") == L.flb_out_data
    assert off(lflb, "private.incoming.count") == L.flb_in_count
    assert off(lflb, "private.incoming.data") == L.flb_in_data
    assert off(lflb, "private.incoming.finished") == L.flb_in_finished
    assert off(lflb, "private.incoming.retrieve_status") == L.flb_in_retrieve_status


def off_anon(type_: Any, member: str) -> int:
    return next(m.bit_offset // 8 for m in type_.members if m.name == member)


def _luo_damaged(case: str) -> Path:
    """luo-in with its first session block claiming 999 sessions, or with
    the second session's file block linked to itself."""
    truth = load_truth("luo-in")
    vmcore, _ = fixture_files(truth)
    assert truth.luo is not None
    walk = truth.luo["incoming"]
    core = read_elf_core(vmcore)
    if case == "bad-count":
        at = walk["kernel_vars"]["incoming_sessions_head_pa"] + 8
        patch = (core.phys_to_offset(at, 8), (999).to_bytes(8, "little"))
    else:
        at = walk["sessions"][1]["files_pa"]
        patch = (core.phys_to_offset(at, 8), at.to_bytes(8, "little"))
    out = cache_dir() / "corrupt" / f"luo-in.{case}.vmcore"
    return write_sparse_copy(
        SparseSource(vmcore), out, Damage((patch,), description=case)
    )


@pytest.mark.parametrize("debug", ["dwarf", "kallsyms"])
@pytest.mark.parametrize("case", ["bad-count", "cycle"])
def test_luo_damaged_blocks(case: str, debug: str) -> None:
    damaged = _luo_damaged(case)
    _, vmlinux = fixture_files(load_truth("luo-in"))
    symbols = ("-s", str(vmlinux)) if debug == "dwarf" else ("--no-default-symbols",)
    status, report, stderr = run("-c", str(damaged), *symbols)
    assert status == 0, stderr
    code = {"bad-count": "luo.bad-count", "cycle": "page.cycle"}[case]
    assert codes(report)[code] == "error"
    sessions = report["luo"]["incoming"]["sessions"]
    if case == "bad-count":
        assert sessions == []  # nothing made up
    else:  # the loop is cut after one pass: every file read once
        assert [len(s["files"]) for s in sessions] == [2, 1, 0]
    assert report["chain"]["kexec_count"] == 1  # the rest of the report stands


@pytest.mark.parametrize("name", ["luo-in", "chain-ab"])
def test_debugfs_snapshots_of_the_other_eras(name: str) -> None:
    """kho-debugfs on the guests' own debugfs copies: the LUO blobs (the
    incoming one reused, not shown), 6.18's kho-v1 sub-FDTs and scratch."""
    from kho_drgn.debugfs import debugfs_report, decode_debugfs
    from kho_drgn.report import report_to_dict

    truth = load_truth(name)
    state = decode_debugfs(truth.debugfs)
    report = report_to_dict(debugfs_report(state, truth.release))
    assert not [f for f in report["findings"] if f["severity"] == "error"]
    assert report["kho"]["scratch"]["areas"]

    def views(side: str) -> dict[str, Any]:
        subtrees = report["kho"][side]["subtrees"]
        return {s["name"]: s["decoded"] for s in subtrees if s["decoded"]}

    if name == "luo-in":
        assert views("incoming")["LUO"]["kind"] == "luo"
        assert views("incoming")["LUO"]["fields"] == {"blob": "reused"}
        out = views("outgoing")["LUO"]
        assert (out["compatible"], out["fields"]["liveupdate_num"]) == ("luo-v5", 2)
    else:
        out = views("outgoing")
        assert out["kho_test"]["fields"]["nr_folios"] == 14
        assert out["memblock"]["entries"][0]["name"] == "khotest"
        # 6.18 (kho-v1): sub-FDTs sized by their headers, as in a dump, and
        # the kernel said once to predate kexec-metadata.
        sizes = {
            s["name"]: s["blob_size"] for s in report["kho"]["incoming"]["subtrees"]
        }
        assert sizes == {"memblock": 210}
        codes = [f["code"] for f in report["findings"]]
        assert codes.count("metadata.predates") == 1
        assert "metadata.absent" not in codes
        assert report["chain"]["predates_metadata"] is True
        assert report["chain"]["kho_kexec"] is True


@pytest.mark.parametrize("name", ["luo-in", "chain-ab"])
def test_incoming_map_emptied_since_boot(name: str) -> None:
    """Both dumps' incoming map root page is all zeros by crash time: an empty
    map from a kernel that handed over subtrees is said to be reused, not
    shown as a whole map of nothing."""
    vmcore, _ = fixture_files(load_truth(name))
    status, report, stderr = run("-c", str(vmcore), "--no-default-symbols")
    assert status == 0, stderr
    incoming = report["kho"]["incoming"]
    assert incoming["memory_map"]["map"]["blocks"] == 0
    assert incoming["subtrees"]
    assert codes(report)["memmap.incoming-reused"] == "info"
