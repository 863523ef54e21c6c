"""Live: boot the fixture kernels in QEMU through a KHO chain, hold the last
one, attach ``drgn --qemu`` and check the report against what the guest
printed on its serial console."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixturedata import CONTRIB_SCRIPT
from livevm import LabRun, Stage, boot_lab, lab_unavailable, vmlinux_b

pytestmark = [pytest.mark.live, pytest.mark.fixtures]

A, B = "7.2.13-kho-a", "7.2.13-kho-b"


def lab_vmlinux(*kernels: str) -> Path:
    """Kernel b's vmlinux; skips, naming what is missing, when the lab can't boot."""
    why = lab_unavailable(*kernels)
    if why:
        pytest.skip(why)
    vmlinux = vmlinux_b()
    if vmlinux is None:
        pytest.skip("fixture missing: kho-7.2/vmlinux-7.2.13-kho-b.xz")
    return vmlinux


def run_live(lab: LabRun, vmlinux: Path | None, *args: str) -> dict:  # type: ignore[type-arg]
    symbols = ["-s", str(vmlinux)] if vmlinux else ["--no-default-symbols"]
    proc = subprocess.run(
        [sys.executable, "-m", "drgn", "--quiet", "--qemu", str(lab.qmp_socket),
         *symbols, str(CONTRIB_SCRIPT), "--json", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def metadata_of(stage: Stage, direction: str) -> tuple[str, int]:
    from kho_drgn.metadata import decode_kexec_metadata

    blob = stage.debugfs(f"kho/{direction}/sub_fdts/kexec-metadata")
    assert blob is not None
    md = decode_kexec_metadata(blob)
    assert md.valid and md.previous_release is not None and md.kexec_count is not None
    return md.previous_release, md.kexec_count


def test_live_chain_a_a_b() -> None:
    """cold a -> kexec a -> kexec b, held: the running b's chain, live."""
    vmlinux = lab_vmlinux("a", "b")
    with boot_lab("a,b", first="a") as lab:
        reports = [run_live(lab, vmlinux, "--scan-pages"), run_live(lab, None)]
    last = lab.last
    assert [s.release for s in lab.stages] == [A, A, B]
    assert f"KHO: exec from: {A} (count 2)" in lab.kho_lines
    in_fdt = last.debugfs("kho/in/fdt")
    assert in_fdt is not None
    for report in reports:
        assert report["target"]["kind"] == "live-remote"
        assert report["target"]["release"] == last.release
        incoming = report["kho"]["incoming"]
        assert incoming["fdt_size"] == len(in_fdt)
        assert incoming["compatible"] == "kho-v4"
        chain = report["chain"]
        assert (chain["previous_release"], chain["kexec_count"]) == metadata_of(
            last, "in"
        )
        nxt = chain["next"]
        assert (nxt["release"], nxt["kexec_count"]) == metadata_of(last, "out")
        assert chain["line"].endswith(
            f"-> {B} [running, kexec #2] -> next: {B}, count 3"
        )
        texts = [line["text"] for line in report["crash"]["kho_log"]]
        assert f"KHO: exec from: {A} (count 2)" in texts
        assert report["crash"]["panic_message"] is None
        assert not [f for f in report["findings"] if f["severity"] == "error"]
        check_live_subtrees_and_memory(report, last)
    magic = reports[0]["kho"]["incoming"]["memory_map"]["page_magic"]
    tagged = {t["phys"] for t in magic["tagged"]}
    assert reports[0]["kho"]["kho_in"]["fdt_phys"] in tagged
    for sub in reports[0]["kho"]["incoming"]["subtrees"]:
        assert sub["preserved_data"] in tagged  # 7.2.13 does not restore these


def check_live_subtrees_and_memory(report: dict, stage: Stage) -> None:  # type: ignore[type-arg]
    """Subtrees read from guest memory decode like the guest's debugfs copies;
    the outgoing map is whole and holds every outgoing blob."""
    from kho_drgn.subtrees import decode_subtree

    for side, prefix in (("incoming", "in"), ("outgoing", "out")):
        handover = report["kho"][side]
        if handover is None:
            continue
        for sub in handover["subtrees"]:
            copy = stage.debugfs(f"kho/{prefix}/sub_fdts/{sub['name']}")
            if sub["decoded"] is None or copy is None:
                continue
            assert sub["decoded"]["fields"] == decode_subtree(sub["name"], copy).fields
    out = report["kho"]["outgoing"]["memory_map"]["map"]
    assert out["complete"] and out["blocks"] > 0
    codes = {f["code"] for f in report["findings"]}
    assert "memmap.blob-not-preserved" not in codes


def test_live_cold_boot_b() -> None:
    """cold b, held: no incoming handover; the outgoing one says count 1."""
    vmlinux = lab_vmlinux("b")
    with boot_lab("", first="b") as lab:
        report = run_live(lab, vmlinux)
    (stage,) = lab.stages
    assert report["kho"]["status"] == "cold-boot"
    assert not [f for f in stage.files if "/kho/in/" in f]
    assert report["chain"]["next"]["kexec_count"] == metadata_of(stage, "out")[1] == 1
    assert report["chain"]["line"].startswith(f"cold boot -> {B} [running, cold boot]")
    check_live_subtrees_and_memory(report, stage)
