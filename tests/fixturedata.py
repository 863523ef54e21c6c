"""Where the shared fixtures are, decompressed once into a cache, and their truth.

The fixtures live beside the checkout (``../shared/fixtures``, as in CI) or
wherever ``KHO_DRGN_SHARED`` points.  Tests that need them skip, naming the
missing file, when they are absent.
"""

from __future__ import annotations

import base64
import json
import lzma
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CONTRIB_SCRIPT = REPO / "contrib" / "kho_chain.py"


def shared_dir() -> Path | None:
    """The shared folder (fixtures, ABI notes), or None if absent."""
    env = os.environ.get("KHO_DRGN_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    return path if path.is_dir() else None


def cache_dir() -> Path:
    """Where decompressed fixtures are kept between runs."""
    env = os.environ.get("KHO_DRGN_CACHE")
    path = Path(env) if env else REPO / ".cache" / "fixtures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fixture_path(relative: str) -> Path:
    """A file under ``shared/fixtures``; skips the test when it is missing."""
    shared = shared_dir()
    if shared is None:
        pytest.skip("no shared fixtures: ../shared (or $KHO_DRGN_SHARED) is missing")
    path = shared / "fixtures" / relative
    if not path.exists():
        pytest.skip(f"fixture missing: {path}")
    return path


def decompressed(path_xz: Path) -> Path:
    """Decompress an ``.xz`` fixture once into the cache (atomically)."""
    rel = path_xz.parent.name
    out = cache_dir() / rel / path_xz.name.removesuffix(".xz")
    stamp = out.with_name(out.name + ".src")
    source_id = f"{path_xz.stat().st_size}:{path_xz.stat().st_mtime_ns}"
    if out.exists() and stamp.exists() and stamp.read_text() == source_id:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".")
    try:
        with os.fdopen(fd, "wb") as dst, lzma.open(path_xz, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    stamp.write_text(source_id)
    return out


@dataclass
class Side:
    """What the truth says about one direction of handover."""

    compatible: str | None = None
    preserved_memory_map: int | None = None
    subtrees: dict[str, dict[str, int]] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None


@dataclass
class Truth:
    """A fixture's ground truth, captured inside the guest (not from the dump)."""

    name: str
    vmcore_xz: Path
    vmlinux_xz: Path
    release: str
    kho_enabled: bool
    chain: list[str]  # releases, cold boot first, this kernel last
    kho_boot_lines: list[str]
    incoming: Side | None
    outgoing: Side | None
    panic_reason: str | None
    crashed_task: dict[str, Any] | None
    debugfs: dict[str, bytes] = field(default_factory=dict)
    #: The truth file's ``luo`` section (the LUO fixture), else None.
    luo: dict[str, Any] | None = None
    #: Whether the kernels of the chain have kexec-metadata (Linux 7.1+).
    has_metadata: bool = True


DUMPS = ("chain-aab", "cold-b", "off-b", "kdump")
#: Real dumps of the other eras and clients: folder and vmlinux of each.
ERA_DUMPS = {
    "luo-in": ("kho-7.2-luo", "vmlinux-7.2.13-kho-l.xz"),
    "chain-ab": ("kho-6.18", "vmlinux-6.18.5-kho-618a.xz"),
}
ALL_DUMPS = DUMPS + tuple(ERA_DUMPS)


def load_truth(name: str) -> Truth:
    """Load and normalise a fixture's truth file (two schemas exist)."""
    if name == "kdump":
        return _load_kdump_truth()
    folder, vmlinux = ERA_DUMPS.get(name, ("kho-7.2", "vmlinux-7.2.13-kho-b.xz"))
    path = fixture_path(f"{folder}/{name}.truth.json")
    data = json.loads(path.read_text())

    def side(raw: dict[str, Any] | None) -> Side | None:
        if raw is None:
            return None
        return Side(
            compatible=raw.get("compatible"),
            preserved_memory_map=raw.get("preserved_memory_map"),
            subtrees={
                name: _subtree_truth(fields)
                for name, fields in (raw.get("subtrees") or {}).items()
            },
            metadata=raw.get("kexec_metadata"),
        )

    return Truth(
        name=name,
        vmcore_xz=path.with_name(f"{name}.vmcore.xz"),
        vmlinux_xz=path.with_name(vmlinux),
        release=data["kernel_release"],
        kho_enabled=data["kho_enabled"],
        chain=[stage["release"] for stage in data["chain"]],
        kho_boot_lines=[line for line in data["boot_lines"] if "KHO" in line],
        incoming=side(data["incoming"]),
        outgoing=side(data["outgoing"]),
        panic_reason=data.get("panic"),
        crashed_task=data.get("crashed_task"),
        debugfs={
            k: base64.b64decode(v)
            for k, v in (data.get("debugfs_base64") or {}).items()
        },
        luo=data.get("luo"),
        has_metadata=(data["incoming"] or data["outgoing"] or {}).get("kexec_metadata")
        is not None,
    )


def _subtree_truth(fields: dict[str, Any]) -> dict[str, int]:
    """A sub-node's truth in the report's terms: kho-v1 (6.16..6.18) names
    its data ``fdt`` (a sub-FDT, sized by its header), 7.x
    ``preserved_data`` and ``blob_size``."""
    if "fdt" in fields:
        return {"preserved_data": fields["fdt"]}
    return {k: v for k, v in fields.items() if isinstance(v, int)}


def _strip_timestamp(line: str) -> str:
    return line.split("] ", 1)[1] if line.startswith("[") and "] " in line else line


def _load_kdump_truth() -> Truth:
    path = fixture_path("kho-7.2-kdump/kdump.ground-truth.json")
    data = json.loads(path.read_text())
    crashed = data["crashed_kernel"]
    last_stage = data["stages"][-1]
    in_fdt = last_stage["files"].get("/sys/kernel/debug/kho/in/fdt", {}).get("fdt")
    incoming = Side(metadata=dict(crashed["kho_in"]["metadata"], blob_size=73))
    if in_fdt:
        root = in_fdt["nodes"]["/"]
        incoming.compatible = root["compatible"]["string"]
        incoming.preserved_memory_map = int(root["preserved-memory-map"]["u64_le"], 16)
        for path_, props in in_fdt["nodes"].items():
            if path_ != "/":
                incoming.subtrees[path_.lstrip("/")] = {
                    "preserved_data": int(props["preserved-data"]["u64_le"], 16),
                    "blob_size": int(props["blob-size"]["u64_le"], 16),
                }
    outgoing = Side(
        subtrees={name: {} for name in crashed["kho_out"]["sub_blobs"]},
        metadata=dict(crashed["kho_out"]["metadata"], blob_size=73),
    )
    panic = next(
        (_strip_timestamp(x) for x in data["panic_lines"] if "Kernel panic" in x), None
    )
    return Truth(
        name="kdump",
        vmcore_xz=path.with_name("kdump.vmcore.xz"),
        vmlinux_xz=path.with_name("vmlinux-7.2.13-kho-b.xz"),
        release=crashed["release"],
        kho_enabled=True,
        chain=list(data["boots"]),
        kho_boot_lines=["KHO: " + line for line in crashed["exec_from"]],
        incoming=incoming,
        outgoing=outgoing,
        panic_reason=panic.split(": ", 1)[1] if panic else None,
        crashed_task=None,
    )


def fixture_files(truth: Truth) -> tuple[Path, Path]:
    """(vmcore, vmlinux) decompressed, for a truth record."""
    for p in (truth.vmcore_xz, truth.vmlinux_xz):
        if not p.exists():
            pytest.skip(f"fixture missing: {p}")
    return decompressed(truth.vmcore_xz), decompressed(truth.vmlinux_xz)


def overlay_phys(prog: Any, phys: int, data: bytes) -> None:
    """Lay ``data`` over the target's physical memory at ``phys`` (whole
    pages, the rest as it was): drgn's own memory segments take precedence
    over the core file, so a damaged dump needs no copy."""
    base, end = phys & ~4095, (phys + len(data) + 4095) & ~4095
    page = bytearray(prog.read(base, end - base, True))
    page[phys - base : phys - base + len(data)] = data
    frozen = bytes(page)

    def read(address: int, count: int, offset: int, physical: bool) -> bytes:
        return frozen[offset : offset + count]

    prog.add_memory_segment(base, end - base, read, True)
