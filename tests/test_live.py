"""Live: boot the fixture kernels in QEMU through a KHO chain, hold the last
one, attach ``drgn --qemu`` and check the report against what the guest
printed on its serial console."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fixturedata import CONTRIB_SCRIPT, decompressed, fixture_path

pytestmark = [pytest.mark.live, pytest.mark.fixtures]

QEMU = "qemu-system-x86_64"
BASE64_LINE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
#: init.sh reads kholab.* with a greedy sed, so the last occurrence wins: hold
#: must end the base command line, which is repeated inside kholab.base=.
BASE_ARGS = "console=ttyS0 panic=0 reserve_mem=1M:4K:khotest"


@dataclass
class Stage:
    """What one kernel of the chain printed (``=== KHOLAB`` lines)."""

    release: str
    dmesg: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)


def parse_serial(text: str) -> list[Stage]:
    stages: list[Stage] = []
    current_file: str | None = None
    chunks: list[str] = []
    for line in text.splitlines():
        line = line.rstrip("\r")
        if line.startswith("=== KHOLAB BEGIN "):
            release = line.split("release=", 1)[1].strip()
            stages.append(Stage(release))
        elif line.startswith("=== KHOLAB DMESG ") and stages:
            stages[-1].dmesg.append(line[len("=== KHOLAB DMESG ") :])
        elif line.startswith("=== KHOLAB FILE ") and stages:
            current_file, chunks = line[len("=== KHOLAB FILE ") :], []
        elif line.startswith("=== KHOLAB END FILE") and current_file and stages:
            stages[-1].files[current_file] = base64.b64decode("".join(chunks))
            current_file = None
        elif current_file is not None and BASE64_LINE.fullmatch(line.strip()):
            # Kernel messages can interleave with the base64 on the console.
            chunks.append(line.strip())
    return stages


@dataclass
class LiveGuest:
    qmp: Path
    serial: Path

    def stages(self) -> list[Stage]:
        return parse_serial(self.serial.read_text(errors="replace"))


@contextmanager
def boot_lab(
    first: str, plan: str, kho: bool = True, timeout: float = 240
) -> Iterator[LiveGuest]:
    """Boot kernel ``first``, kexec along ``plan`` and hold the last kernel."""
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (apt-get install qemu-system-x86)")
    live = fixture_path("kho-7.2/live")
    initrd = decompressed(live / "lab-initrd.cpio.xz")
    base = f"{BASE_ARGS} kho={'on' if kho else 'off'} kholab.hold=1"
    append = (
        f"{base} kholab.stage=0 kholab.plan={plan} kholab.base={base.replace(' ', '~')}"
    )
    with tempfile.TemporaryDirectory(prefix="kho-live-") as tmp:
        guest = LiveGuest(Path(tmp) / "qmp.sock", Path(tmp) / "serial.log")
        cmd = [
            QEMU, "-accel", "tcg", "-m", "512M", "-smp", "2", "-nographic",
            "-nodefaults", "-no-reboot", "-serial", f"file:{guest.serial}",
            "-device", "vmcoreinfo", "-qmp", f"unix:{guest.qmp},server=on,wait=off",
            "-kernel", str(live / f"bzImage-7.2.13-kho-{first}"),
            "-initrd", str(initrd), "-append", append,
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                text = (
                    guest.serial.read_text(errors="replace")
                    if guest.serial.exists()
                    else ""
                )
                if "=== KHOLAB HOLD" in text:
                    break
                failed = "=== KHOLAB PANIC" in text or "KHOLAB KEXEC FAILED" in text
                if failed or proc.poll() is not None or time.monotonic() > deadline:
                    err = (
                        proc.stderr.read().decode()
                        if proc.stderr and proc.poll() is not None
                        else ""
                    )
                    pytest.fail(
                        f"guest did not reach HOLD (qemu {proc.poll()}): {err}\n"
                        + text[-3000:]
                    )
                time.sleep(0.5)
            yield guest
        finally:
            proc.kill()
            proc.wait(timeout=30)


def run_live(guest: LiveGuest, vmlinux: Path | None) -> dict:  # type: ignore[type-arg]
    symbols = ["-s", str(vmlinux)] if vmlinux else ["--no-default-symbols"]
    proc = subprocess.run(
        [sys.executable, "-m", "drgn", "--quiet", "--qemu", str(guest.qmp), *symbols,
         str(CONTRIB_SCRIPT), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def metadata_of(stage: Stage, direction: str) -> tuple[str, int]:
    from kho_drgn.metadata import decode_kexec_metadata

    md = decode_kexec_metadata(
        stage.files[f"/sys/kernel/debug/kho/{direction}/sub_fdts/kexec-metadata"]
    )
    assert md.valid and md.previous_release is not None and md.kexec_count is not None
    return md.previous_release, md.kexec_count


def vmlinux_b() -> Path:
    return decompressed(fixture_path("kho-7.2/vmlinux-7.2.13-kho-b.xz"))


def test_live_chain_a_a_b() -> None:
    """cold a -> kexec a -> kexec b, held: the running b's chain, live."""
    vmlinux = vmlinux_b()
    with boot_lab("a", "a,b") as guest:
        stages = guest.stages()
        last = stages[-1]
        assert [s.release for s in stages] == [
            "7.2.13-kho-a",
            "7.2.13-kho-a",
            "7.2.13-kho-b",
        ]
        for report in (run_live(guest, vmlinux), run_live(guest, None)):
            assert report["target"]["kind"] == "live-remote"
            assert report["target"]["release"] == last.release
            chain = report["chain"]
            assert (chain["previous_release"], chain["kexec_count"]) == metadata_of(
                last, "in"
            )
            nxt = chain["next"]
            assert (nxt["release"], nxt["kexec_count"]) == metadata_of(last, "out")
            assert chain["line"].endswith(
                "-> 7.2.13-kho-b [running, kexec #2] -> next: 7.2.13-kho-b, count 3"
            )
            assert "KHO: exec from: 7.2.13-kho-a (count 2)" in " ".join(last.dmesg)
            texts = [line["text"] for line in report["crash"]["kho_log"]]
            assert "KHO: exec from: 7.2.13-kho-a (count 2)" in texts
            assert report["crash"]["panic_message"] is None
            assert not [f for f in report["findings"] if f["severity"] == "error"]


def test_live_cold_boot_b() -> None:
    vmlinux = vmlinux_b()
    with boot_lab("b", "") as guest:
        (stage,) = guest.stages()
        report = run_live(guest, vmlinux)
        assert report["kho"]["status"] == "cold-boot"
        assert (
            report["chain"]["next"]["kexec_count"] == metadata_of(stage, "out")[1] == 1
        )
        assert report["chain"]["line"].startswith(
            "cold boot -> 7.2.13-kho-b [running, cold boot]"
        )
