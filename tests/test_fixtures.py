"""End to end on the shared real vmcores: the real drgn CLI runs the contrib
script, and its JSON must match the truth captured inside each guest."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from fixturedata import (
    ALL_DUMPS,
    CONTRIB_SCRIPT,
    Truth,
    fixture_files,
    load_truth,
)

pytestmark = pytest.mark.fixtures


def run_script(*drgn_args: str, script_args: tuple[str, ...] = ("--json",)) -> Any:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "drgn",
            "--quiet",
            *drgn_args,
            str(CONTRIB_SCRIPT),
            *script_args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout) if "--json" in script_args else proc.stdout


@pytest.fixture(scope="module", params=ALL_DUMPS)
def truth(request: pytest.FixtureRequest) -> Truth:
    return load_truth(request.param)


@pytest.fixture(scope="module")
def report_dwarf(truth: Truth) -> Any:
    vmcore, vmlinux = fixture_files(truth)
    return run_script("-c", str(vmcore), "-s", str(vmlinux))


@pytest.fixture(scope="module")
def report_nodebug(truth: Truth) -> Any:
    vmcore, _ = fixture_files(truth)
    return run_script("-c", str(vmcore), "--no-default-symbols")


def check_side(side: Any, expected: Any) -> None:
    """One handover direction against the truth, field by field."""
    assert (side is None) == (expected is None)
    if expected is None:
        return
    if expected.compatible is not None:
        assert side["compatible"] == expected.compatible
    else:
        assert side["compatible"] == "kho-v4"  # 7.2.13's ABI, per kho-abi-7.2.md
    if expected.preserved_memory_map is not None:
        assert side["preserved_memory_map"] == expected.preserved_memory_map
    got = {s["name"]: s for s in side["subtrees"]}
    assert set(got) == set(expected.subtrees)
    for name, fields in expected.subtrees.items():
        for key, value in fields.items():
            assert got[name][key] == value, (name, key)
    md, want = side["kexec_metadata"], expected.metadata
    if want is None:  # before Linux 7.1
        assert md is None
        return
    assert md is not None and md["valid"]
    for key in ("blob_size", "version", "previous_release", "kexec_count"):
        assert md[key] == want[key], key


def check_report(report: Any, truth: Truth) -> None:
    assert report["schema"] == "kho-drgn/report/2"
    assert report["target"]["release"] == truth.release
    kho = report["kho"]
    assert (kho["status"] in ("kexec", "cold-boot")) == truth.kho_enabled
    check_side(kho["incoming"], truth.incoming)
    check_side(kho["outgoing"], truth.outgoing)

    chain = report["chain"]
    assert chain["current_release"] == truth.chain[-1] == truth.release
    if truth.kho_enabled and not truth.has_metadata:
        # Before 7.1 nothing in a dump counts kexecs or names the previous
        # kernel: unknown, not guessed.
        assert chain["kexec_count"] is None and chain["previous_release"] is None
        assert chain["next"] is None
        assert chain["kho_kexec"] is True and chain["predates_metadata"] is True
        codes = [f["code"] for f in report["findings"]]
        assert codes.count("metadata.predates") == 1  # said once, as info
        assert "metadata.absent" not in codes and "log.boot-line-gone" not in codes
    elif truth.kho_enabled:
        assert chain["kexec_count"] == len(truth.chain) - 1
        assert chain["previous_release"] == (
            truth.chain[-2] if len(truth.chain) > 1 else None
        )
        assert chain["next"]["release"] == truth.release
        assert chain["next"]["kexec_count"] == len(truth.chain)
    else:
        assert chain["kexec_count"] is None and chain["next"] is None
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert errors == []
    rank = {"error": 0, "warning": 1, "info": 2}  # most severe first
    ranks = [rank[f["severity"]] for f in report["findings"]]
    assert ranks == sorted(ranks)


def check_crash(report: Any, truth: Truth) -> None:
    crash = report["crash"]
    assert crash["release"] == truth.release
    assert crash["panic_reason"] == truth.panic_reason
    assert crash["log"]["wrapped"] is False
    kho_lines = [line["text"] for line in crash["kho_log"]]
    for line in truth.kho_boot_lines:
        assert line in kho_lines


def test_json_matches_truth(report_dwarf: Any, truth: Truth) -> None:
    check_report(report_dwarf, truth)
    check_crash(report_dwarf, truth)
    assert report_dwarf["target"]["symbols"] == "dwarf"
    task = report_dwarf["crash"]["crashed_task"]
    if truth.crashed_task is not None:
        assert {"comm": task["comm"], "pid": task["pid"]} == truth.crashed_task
    assert task["source"] == "drgn"
    assert report_dwarf["crash"]["stack_trace"]
    assert report_dwarf["crash"]["stack_trace_source"] == "drgn"


def test_no_debuginfo_gives_same_chain(
    report_nodebug: Any, report_dwarf: Any, truth: Truth
) -> None:
    """Without vmlinux: kallsyms + ABI layouts + VMCOREINFO printk."""
    check_report(report_nodebug, truth)
    check_crash(report_nodebug, truth)
    assert report_nodebug["target"]["symbols"] == "kallsyms"
    assert report_nodebug["chain"] == report_dwarf["chain"]
    assert report_nodebug["kho"]["incoming"] == _without_layout(
        report_dwarf["kho"]["incoming"]
    )
    codes = {f["code"] for f in report_nodebug["findings"]}
    assert "symbols.no-dwarf" in codes  # every fixture kernel has KHO built in


def test_no_debuginfo_task_and_stack_from_the_log(
    report_nodebug: Any, report_dwarf: Any, truth: Truth
) -> None:
    """Without vmlinux, the task and call trace the kernel printed with the
    panic stand in for drgn's: same task, and the printed frames are the
    ones drgn unwinds (less dump_stack's own and the entry trampoline)."""
    crash, dwarf = report_nodebug["crash"], report_dwarf["crash"]
    task = crash["crashed_task"]
    if truth.name == "kdump":  # vpanic went to the capture kernel before
        assert task is None and not crash["stack_trace"]  # printing them
        assert "no 'CPU: .. PID" in crash["unavailable"]["crashed_task"]
        return
    assert task["source"] == "log"
    assert (task["comm"], task["pid"]) == (
        dwarf["crashed_task"]["comm"],
        dwarf["crashed_task"]["pid"],
    )
    assert crash["crashed_cpu"] == dwarf["crashed_cpu"]
    assert crash["stack_trace_source"] == "log"
    logged = [
        frame.split("+")[0]
        for frame in crash["stack_trace"]
        if not frame.startswith("? ")  # the kernel's unreliable guesses
    ]
    unwound = {
        line.split()[1] for line in dwarf["stack_trace"] if len(line.split()) > 1
    }
    assert {"panic", "vpanic"} <= set(logged)
    assert len(set(logged) - unwound) <= 3, set(logged) - unwound


def _without_layout(side: Any) -> Any:
    if side is None:
        return None
    side = json.loads(json.dumps(side))
    if side["kexec_metadata"] is not None:
        side["kexec_metadata"]["layout"] = "abi"
    return side


def test_text_leads_with_chain(truth: Truth) -> None:
    vmcore, vmlinux = fixture_files(truth)
    text = run_script("-c", str(vmcore), "-s", str(vmlinux), script_args=())
    first = text.splitlines()[0]
    assert first.startswith("kexec chain: ")
    if truth.name in ("chain-aab", "kdump"):
        assert first == (
            "kexec chain: cold boot -> (1 kexec) -> 7.2.13-kho-a -> 7.2.13-kho-b "
            "[crashed, kexec #2] -> next: 7.2.13-kho-b, count 3"
        )
    elif truth.name == "luo-in":
        assert first == (
            "kexec chain: cold boot -> 7.2.13-kho-l -> 7.2.13-kho-l "
            "[crashed, kexec #1] -> next: 7.2.13-kho-l, count 2"
        )
        assert "LUO (Live Update Orchestrator)" in text
        for name in ("kholab-session", "kholab-second", "kholab-empty"):
            assert f" {name} " in text
    elif truth.name == "chain-ab":
        assert first == (
            "kexec chain: ? -> (previous kernel not recorded before 7.1) -> "
            "6.18.5-kho-618a [crashed, KHO kexec: yes, count unknown] -> next: "
            "KHO finalized, count unknown (no kexec-metadata before 7.1)"
        )
    elif truth.name == "cold-b":
        assert first == (
            "kexec chain: cold boot -> 7.2.13-kho-b [crashed, cold boot] "
            "-> next: 7.2.13-kho-b, count 1"
        )
    else:
        assert "KHO disabled" in first


def test_scratch_matches_debugfs(
    report_dwarf: Any, report_nodebug: Any, truth: Truth
) -> None:
    """kho_scratch as read from the dump == what debugfs printed in the guest."""
    phys = truth.debugfs.get("kho/out/scratch_phys")
    lengths = truth.debugfs.get("kho/out/scratch_len")
    if phys is None or lengths is None:
        pytest.skip(f"{truth.name}: no scratch snapshot in the truth file")
    expected = [
        {"addr": int(a, 16), "size": int(s, 16)}
        for a, s in zip(phys.decode().split(), lengths.decode().split())
    ]
    for report in (report_dwarf, report_nodebug):
        scratch = report["kho"]["scratch"]
        assert scratch["areas"] == expected
        if report["kho"]["kho_in"]["fdt_phys"]:
            # After a KHO boot the kernel adopts the array it was handed.
            assert scratch["array_phys"] == report["kho"]["kho_in"]["scratch_phys"]


@pytest.fixture(scope="module")
def report_ranges(truth: Truth) -> Any:
    vmcore, vmlinux = fixture_files(truth)
    return run_script("-c", str(vmcore), "-s", str(vmlinux),
                      script_args=("--json", "--ranges", "--scan-pages",
                                   "--no-crash"))  # fmt: skip


def _covered(ranges: list[dict[str, int]], start: int, size: int) -> bool:
    return any(r["start"] <= start and start + size <= r["start"] + r["size"]
               for r in ranges)  # fmt: skip


def test_preserved_memory(
    report_ranges: Any, report_nodebug: Any, truth: Truth
) -> None:
    """The outgoing map is whole and holds every outgoing blob; on a KHO boot
    the incoming FDT and blobs are still tagged KHO_PAGE_MAGIC (7.2.13 never
    restores them); no vmlinux gives the same maps."""
    kho = report_ranges["kho"]
    if truth.outgoing is None:
        assert kho["outgoing"] is None
        return
    out = kho["outgoing"]["memory_map"]["map"]
    want_format = "chunks" if kho["outgoing"]["compatible"] == "kho-v1" else "radix"
    assert out["format"] == want_format and out["complete"], out["findings"]
    assert out["root_phys"] == kho["outgoing"]["preserved_memory_map"]
    assert out["blocks"] == sum(o["blocks"] for o in out["orders"]) > 0
    assert out["pages"] == sum(o["blocks"] << o["order"] for o in out["orders"])
    assert out["bytes"] == out["pages"] * 4096
    assert out["range_count"] == len(out["ranges"]) > 0
    assert sum(r["size"] for r in out["ranges"]) == out["bytes"]  # no overlaps
    for sub in kho["outgoing"]["subtrees"]:
        assert _covered(out["ranges"], sub["preserved_data"], sub["blob_size"]), sub
        for folio in (sub["decoded"] or {}).get("entries", []):
            if "order" in folio:  # kho_test's folios are preserved too
                size = 4096 << folio["order"]
                assert _covered(out["ranges"], folio["phys"], size), folio
    codes = {f["code"] for f in report_ranges["findings"]}
    assert "memmap.blob-not-preserved" not in codes
    assert kho["outgoing"]["memory_map"]["page_magic"] is None
    if truth.incoming is not None:
        magic = kho["incoming"]["memory_map"]["page_magic"]
        tagged = {t["phys"]: t["order"] for t in magic["tagged"]}
        assert magic["tagged_blocks"] == len(tagged) > 0
        if kho["incoming"]["compatible"] != "kho-v1":
            # 7.x preserves the root FDT page; 6.18 does not tag it.
            assert tagged[kho["kho_in"]["fdt_phys"]] == 0
        for sub in kho["incoming"]["subtrees"]:
            if sub["name"] == "LUO":  # LUO frees its luo_ser page at boot
                assert sub["preserved_data"] not in tagged
                continue
            assert sub["preserved_data"] in tagged, sub  # any order
        assert magic["tagged_not_in_map"] == 0
    nodebug = report_nodebug["kho"]  # without --scan-pages
    for side in ("incoming", "outgoing"):
        if kho[side] is not None:
            want = kho[side]["memory_map"]
            want["map"].pop("ranges")
            assert nodebug[side]["memory_map"] == {**want, "page_magic": None}


def test_subtrees_decoded(report_dwarf: Any, report_nodebug: Any, truth: Truth) -> None:
    """Every subtree blob is read from the dump and decoded, and says what the
    guest's debugfs copy of it says; the same without vmlinux."""
    from kho_drgn.subtrees import decode_subtree

    for side in ("incoming", "outgoing"):
        handover = report_dwarf["kho"][side]
        if handover is None:
            continue
        prefix = "in" if side == "incoming" else "out"
        for sub in handover["subtrees"]:
            decoded = sub["decoded"]
            if sub["name"] == "kexec-metadata":
                assert decoded is None  # it is kexec_metadata, decoded above
                continue
            assert decoded["size"] == sub["blob_size"]
            assert not [f for f in decoded["findings"] if f["severity"] == "error"]
            copy = truth.debugfs.get(f"kho/{prefix}/sub_fdts/{sub['name']}")
            if copy is not None:
                view = decode_subtree(sub["name"], copy).to_dict()
                assert decoded["fields"] == view["fields"]
                assert decoded["kind"] == view["kind"] != "raw"
            if decoded["kind"] == "memblock":
                assert decoded["entries"][0]["name"] == "khotest"
            consumed = {f["code"] for f in decoded["findings"]}
            if "subtree.kho-test.consumed" in consumed:
                assert side == "incoming"  # restored and freed at boot
            elif decoded["kind"] == "kho-test":
                # The dump has the vmalloc'd folio list that debugfs cannot show.
                assert len(decoded["entries"]) == decoded["fields"]["nr_folios"]
        assert report_nodebug["kho"][side]["subtrees"] == handover["subtrees"]


def _luo_truth(truth: Truth) -> dict[str, Any]:
    if truth.luo is None:
        pytest.skip(f"{truth.name}: no LUO in this fixture")
    return truth.luo


def check_luo_incoming(luo: Any, truth: Truth) -> None:
    """Sessions, files, memfds and FLBs == the guest's own /proc/kcore walk,
    and == what the first kernel's program preserved."""
    want = _luo_truth(truth)
    incoming = luo["incoming"]
    assert (
        incoming["liveupdate_num"] == want["incoming"]["kernel_vars"]["liveupdate_num"]
    )
    # The luo_ser page was freed and reused before the walk: said, not shown.
    assert not want["incoming"]["luo_ser_page_at_walk_time"]["intact"]
    assert incoming["blob"] == "reused"
    assert incoming["blob_phys"] == want["incoming"]["fdt_node"]["preserved_data"]
    assert (
        incoming["sessions_pa"]
        == want["incoming"]["kernel_vars"]["incoming_sessions_head_pa"]
    )
    got = {s["name"]: s for s in incoming["sessions"]}
    assert list(got) == [s["name"] for s in want["incoming"]["sessions"]]
    for session in want["incoming"]["sessions"]:
        mine = got[session["name"]]
        assert mine["state"] == "serialized"  # /dev/liveupdate never opened
        assert mine["file_count"] == session["file_count"]
        assert mine["pa"] == session["pa"]
        assert len(mine["files"]) == len(session["files"])
        for file, expected in zip(mine["files"], session["files"]):
            assert file["compatible"] == expected["compatible"] == "memfd-v2"
            assert file["token"] == expected["token"]  # an integer
            assert file["data_pa"] == expected["data_pa"]
            assert file["retrieved"] == "no"
            memfd, want_memfd = file["memfd"], expected["memfd"]
            for key in ("pos", "size", "seals", "flags", "nr_folios"):
                assert memfd[key] == want_memfd[key], key
            assert [
                {"pfn": f["pfn"], "flags": f["flags"], "index": f["index"]}
                for f in memfd["folios"]
            ] == want_memfd["folio_list"]
            assert memfd["folios_complete"]
            # Not restored yet: every folio still carries KHO_PAGE_MAGIC.
            assert {f["preserved"] for f in memfd["folios"]} == {"page-magic"}
    preserved = {
        (m["session"], m["token"]): m
        for m in want["stages"][0]["program"]["memfds_preserved"]
    }
    for session in incoming["sessions"]:
        for file in session["files"]:
            program = preserved[(session["name"], file["token"])]
            assert (file["memfd"]["size"], file["memfd"]["pos"]) == (
                program["size"],
                program["pos"],
            )
            assert file["memfd"]["seals"] == program["seals"]
    assert [
        {k: f[k] for k in ("name", "data", "count", "pa")} for f in incoming["flbs"]
    ] == want["incoming"]["flbs"]
    assert incoming["flbs_pa"] == want["incoming"]["flb_header"]["pa"]


def test_luo_matches_truth(report_dwarf: Any, truth: Truth) -> None:
    luo = report_dwarf["luo"]
    _luo_truth(truth)
    assert luo["kernel_source"] == "dwarf"
    check_luo_incoming(luo, truth)
    # The registered FLBs found their data from the previous boot.
    assert {f["retrieve_status"] for f in luo["incoming"]["flbs"]} == {1}
    outgoing = luo["outgoing"]
    blob = truth.luo["stages"][1]["luo_blob_debugfs"]["incoming"]  # type: ignore[index]
    out_blob = blob["kho/out/sub_fdts/LUO"]
    assert outgoing["blob"] == "intact"
    assert outgoing["compatible"] == out_blob["compatible"] == "luo-v5"
    assert outgoing["liveupdate_num"] == out_blob["liveupdate_num"] == 2
    assert outgoing["sessions_pa"] == out_blob["sessions_pa"] == 0
    assert outgoing["sessions"] == []  # this kernel preserved nothing
    codes = {f["code"]: f for f in report_dwarf["findings"]}
    assert codes["luo.blob-reused"]["severity"] == "info"


def test_luo_without_vmlinux(
    report_nodebug: Any, report_dwarf: Any, truth: Truth
) -> None:
    """kallsyms only: the same sessions, files, memfds and FLBs, and the
    registered FLBs' state (the 7.2 offsets of the LUO variables, checked)."""
    luo = report_nodebug["luo"]
    _luo_truth(truth)
    assert luo["kernel_source"] == "kallsyms"
    check_luo_incoming(luo, truth)
    for side in ("incoming", "outgoing"):
        mine, dwarf = luo[side], report_dwarf["luo"][side]
        assert mine["sessions"] == dwarf["sessions"]
        assert mine["flbs"] == dwarf["flbs"]


def test_luo_absent_elsewhere(report_dwarf: Any, truth: Truth) -> None:
    """Kernels without LUO have no luo section."""
    if truth.luo is not None:
        pytest.skip("the LUO fixture")
    assert report_dwarf["luo"] is None
