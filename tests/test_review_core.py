"""Core defects found by review, each pinned on a real dump with damage laid
over it (drgn memory overlays): looping LUO lists, the LUO folio check, a
damaged kho_in copy, a forged boot line."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import drgn
import pytest
from drgn import offsetof
from drgn.helpers.linux.mm import follow_phys
from fixturedata import decompressed, fixture_path, overlay_phys

from kho_drgn.cli import run

pytestmark = pytest.mark.fixtures

DUMPS = {
    "luo": ("kho-7.2-luo/luo-in.vmcore.xz", "kho-7.2-luo/vmlinux-7.2.13-kho-l.xz"),
    "aab": ("kho-7.2/chain-aab.vmcore.xz", "kho-7.2/vmlinux-7.2.13-kho-b.xz"),
}


def _open(name: str, dwarf: bool = True) -> drgn.Program:
    core, vmlinux = DUMPS[name]
    prog = drgn.Program()
    prog.set_core_dump(str(decompressed(fixture_path(core))))
    if dwarf:
        prog.load_debug_info([str(decompressed(fixture_path(vmlinux)))])
    return prog


def _report(prog: drgn.Program, *args: str) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    assert run(prog, ["--json", *args], stdout=out, stderr=err) == 0, err.getvalue()
    report: dict[str, Any] = json.loads(out.getvalue())
    return report


@pytest.mark.parametrize("loop", ["session", "session and file"])
def test_looping_luo_lists_are_walked_once(loop: str) -> None:
    """A session (and its file) whose ``next`` points at itself: one session,
    a luo.list-loop finding, in a second, not minutes and gigabytes."""
    dwarf = _open("luo")
    mm = dwarf["init_mm"].address_of_()
    base = dwarf["page_offset_base"].value_()
    fake_phys, fake = 0x1000000, base + 0x1000000
    st, ft = dwarf.type("struct luo_session"), dwarf.type("struct luo_file")
    session_list = offsetof(st, "list")
    files_list = offsetof(st, "file_set.files_list")
    file_list, file_at = offsetof(ft, "list"), fake + 2048
    page = bytearray(4096)

    def put(offset: int, value: int) -> None:
        page[offset : offset + 8] = value.to_bytes(8, "little")

    put(session_list, fake + session_list)  # next: itself
    page[offsetof(st, "name") : offsetof(st, "name") + 2] = b"x\0"
    put(files_list, file_at + file_list)
    put(
        2048 + file_list,
        file_at + file_list if "file" in loop else fake + files_list,
    )
    put(2048 + offsetof(ft, "fh"), file_at)
    prog = _open("luo")
    overlay_phys(prog, fake_phys, bytes(page))
    head = dwarf["luo_session_global"].incoming.list.address_
    overlay_phys(
        prog,
        follow_phys(mm, head).value_(),
        (fake + session_list).to_bytes(8, "little"),
    )
    start = time.monotonic()
    report = _report(prog, "--no-memmap")
    assert time.monotonic() - start < 30
    sessions = report["luo"]["incoming"]["sessions"]
    assert len(sessions) == 1
    codes = [f["code"] for f in report["findings"]]
    assert "luo.list-loop" in codes


def test_folio_check_is_a_search_and_a_cut_map_says_nothing() -> None:
    from kho_drgn.luo_target import _folio_preserved
    from kho_drgn.memmap import PhysRange

    ranges = [PhysRange(n * 8192, n * 8192 + 4096) for n in range(1 << 16)]
    start = time.monotonic()
    for pfn in range(0, 1 << 15, 2):
        assert _folio_preserved(None, pfn, None, ranges, "little") == "map"  # type: ignore[arg-type]
    assert time.monotonic() - start < 5
    assert _folio_preserved(None, 1, None, ranges, "little") == "not-preserved"  # type: ignore[arg-type]


@pytest.mark.parametrize("dwarf", [True, False], ids=["dwarf", "no-debuginfo"])
def test_damaged_kho_in_copy_does_not_beat_a_valid_blob(dwarf: bool) -> None:
    """kho_in's previous_release with no NUL (and no boot line to vote): the
    chain follows the valid incoming blob, and says what is wrong."""
    info = _open("aab")
    mm = info["init_mm"].address_of_()
    kho_in = info["kho_in"]
    release = kho_in.previous_release
    prog = _open("aab", dwarf)
    overlay_phys(prog, follow_phys(mm, release.address_).value_(), b"B" * 65)
    report = _report(prog, "--no-memmap", "--no-crash")
    chain = report["chain"]
    assert (chain["previous_release"], chain["kexec_count"]) == ("7.2.13-kho-a", 2)
    assert chain["source"] == "incoming kexec-metadata blob"
    assert "metadata.release-unterminated" in {f["code"] for f in report["findings"]}


def test_only_the_kernels_own_boot_line_counts(tmp_path: Path) -> None:
    from kho_drgn.chain import find_boot_line

    real = "KHO: exec from: 7.2.13-kho-a (count 2)"
    forged = "kholab: KHO: exec from: 7.2.13-kho-x (count 2)"
    line = find_boot_line([real, "other", forged])
    assert line is not None and line.release == "7.2.13-kho-a"
    assert find_boot_line([forged]) is None
    # a second record of the kernel's own form: the first (the boot's) wins
    again = "KHO: exec from: 7.2.13-kho-y (count 5)"
    line = find_boot_line([real, again])
    assert line is not None and line.release == "7.2.13-kho-a"
