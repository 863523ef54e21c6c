"""Smoke tests of ``livevm``: boot the lab kernels, attach ``drgn --qemu`` and
check what it reads against what the guest printed on its serial console."""

from __future__ import annotations

import base64
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from livevm import (
    KERNELS,
    LabError,
    LabRun,
    boot_lab,
    lab_unavailable,
    parse_serial,
    run_drgn,
    shared_dir,
    vmlinux_b,
)

A, B = KERNELS["a"], KERNELS["b"]
FDT_MAGIC = bytes.fromhex("d00dfeed")
METADATA = struct.Struct("<I65sI")  # kexec-metadata v1: version, release, count

#: Runs inside drgn; prints one JSON object.
PROBE = """
import json
from drgn import ProgramFlags
kin = prog["kho_in"]
phys = kin.fdt_phys.value_()
fdt = b""
if phys:
    size = int.from_bytes(prog.read(phys, 8, True)[4:8], "big")
    fdt = prog.read(phys, min(size, 1 << 20), True)
out = prog["kho_out"].fdt.value_()
print(json.dumps({
    "live": bool(prog.flags & ProgramFlags.IS_LIVE),
    "release": prog["init_uts_ns"].name.release.string_().decode(),
    "previous_release": kin.previous_release.string_().decode(),
    "kexec_count": kin.kexec_count.value_(),
    "fdt_phys": phys,
    "in_fdt": fdt.hex(),
    "out_fdt_head": prog.read(out, 64).hex() if out else "",
}))
"""


def lab_or_skip(*kernels: str) -> Path:
    """Kernel b's vmlinux; skips naming what is missing for a live boot."""
    why = lab_unavailable(*kernels)
    if why:
        pytest.skip(why)
    vmlinux = vmlinux_b()
    if vmlinux is None:
        pytest.skip("fixture missing: kho-7.2/vmlinux-7.2.13-kho-b.xz")
    return vmlinux


def probe(lab: LabRun, vmlinux: Path) -> dict[str, Any]:
    """Run PROBE through ``drgn --qemu`` against the held guest."""
    proc = run_drgn(lab, PROBE, vmlinux)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def metadata(blob: bytes | None) -> tuple[int, str, int]:
    """(version, release, count) of a kexec-metadata debugfs file."""
    assert blob is not None and len(blob) == METADATA.size
    version, release, count = METADATA.unpack(blob)
    return version, release.split(b"\0", 1)[0].decode(), count


@pytest.mark.live
def test_boot_timeout_kills_qemu() -> None:
    """A timeout raises LabError with the serial tail, and QEMU is gone."""
    lab_or_skip("b")
    token = f"kholabtest.id={uuid.uuid4().hex}"
    booting = boot_lab("", first="b", extra_args=token, timeout=0.5)
    with pytest.raises(LabError, match="no === KHOLAB HOLD within") as err, booting:
        pytest.fail("held within 0.5 s")
    assert "--- serial log tail ---" in str(err.value)
    assert token in str(err.value)  # extra_args reached the command line
    procs = Path("/proc")
    if procs.is_dir():
        cmdlines = []
        for p in procs.glob("[0-9]*/cmdline"):
            try:
                cmdlines.append(p.read_bytes())
            except OSError:
                continue
        assert not [c for c in cmdlines if token.encode() in c]


@pytest.mark.fixtures
def test_parse_fixture_serial_logs() -> None:
    """The parser reads the dumps' serial logs as their truth files say."""
    shared = shared_dir()
    if shared is None:
        pytest.skip("no shared fixtures: ../shared or $KHO_DRGN_SHARED")
    for name in ("chain-aab", "cold-b", "off-b"):
        log = shared / "fixtures" / "kho-7.2" / f"{name}.serial.log"
        if not log.exists():
            pytest.skip(f"fixture missing: {log}")
        truth = json.loads(log.with_name(f"{name}.truth.json").read_text())
        stages = parse_serial(log.read_bytes().decode(errors="replace"))
        assert [s.release for s in stages] == [c["release"] for c in truth["chain"]]
        assert stages[-1].panicked and not stages[-1].bad_files
        files = {
            k.removeprefix("/sys/kernel/debug/"): v for k, v in stages[-1].files.items()
        }
        want = {
            k: base64.b64decode(v) for k, v in (truth["debugfs_base64"] or {}).items()
        }
        assert files == want
        kho = [x for x in truth["boot_lines"] if x.startswith("KHO: ")]
        assert stages[-1].kho_lines == kho


def test_parse_mends_kernel_messages_cut_into_lines() -> None:
    """Kernel messages between or inside base64 lines do not corrupt a file."""
    log = "\r\n".join(
        [
            "\x1bc\x1b[2J[    0.000000] Linux version x",
            "Booting from ROM..\x1bc\x1b[2J=== KHOLAB BEGIN stage=0 release=r",
            "=== KHOLAB DMESG [    0.5] KHO: exec from: q (count 1)",
            "=== KHOLAB FILE /sys/kernel/debug/kho/x",
            "aGVsbG8g[    2.0] input: mouse",
            "[    2.1] another one",
            "d29ybGQ=",
            "=== KHOLAB END FILE",
            "=== KHOLAB FILE /sys/kernel/debug/kho/y",
            "not base64!",
            "=== KHOLAB END FILE",
            "=== KHOLAB HO[    3.0] late message",
            "LD",
        ]
    )
    (stage,) = parse_serial(log)
    assert (stage.number, stage.release, stage.held) == (0, "r", True)
    assert stage.files == {"/sys/kernel/debug/kho/x": b"hello world"}
    assert list(stage.bad_files) == ["/sys/kernel/debug/kho/y"]
    assert stage.kho_lines == ["KHO: exec from: q (count 1)"]
