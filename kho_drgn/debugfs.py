"""KHO from debugfs: a live host's ``/sys/kernel/debug/kho`` without drgn.

When drgn cannot read the running kernel's memory (no /proc/kcore, lockdown,
no debuginfo at hand), CONFIG_KEXEC_HANDOVER_DEBUGFS still exposes what KHO
handed over and will hand over (kernel/liveupdate/kexec_handover_debugfs.c):

* ``in/fdt`` and ``in/sub_fdts/<name>``: the incoming root FDT and each blob;
* ``out/fdt``, ``out/sub_fdts/<name>``: the outgoing ones;
* ``out/scratch_phys``, ``out/scratch_len``: one hex value per scratch area
  (``out/bootmem_phys``, ``out/bootmem_len`` once 7.4 renames them "bootmem").

Two quirks of 7.2.13 are reported, not tripped over: a kernel booted through
KHO has no ``out/fdt``, and on a cold boot ``out/fdt`` is registered with the
FDT's size at init, so subtrees added later leave it truncated.

``read_debugfs_files`` is the finder (file reads, bounded); everything else
here is pure and works on snapshots (e.g. the fixtures' ``debugfs_base64``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kho_drgn.abi import FDT_HEADER_SIZE, KEXEC_METADATA_NODE
from kho_drgn.fdt import FdtError, KhoFdt, decode_kho_fdt, fdt_header_totalsize
from kho_drgn.findings import Finding, error, info, most_severe_first, warning
from kho_drgn.subtrees import SubtreeView, decode_subtree
from kho_drgn.target import ScratchArea

ByteOrder = Literal["little", "big"]

DEFAULT_ROOT = Path("/sys/kernel/debug/kho")
#: Files larger than this are not read whole (blobs are a few pages at most).
MAX_FILE_SIZE = 16 << 20
#: More files than this under the root is not a KHO debugfs directory.
MAX_FILES = 4096
#: Scratch areas read from out/scratch_phys and out/scratch_len at most.
MAX_SCRATCH_LINES = 1024


class DebugfsUnavailable(Exception):
    """The debugfs directory cannot be read at all; the message says why."""


@dataclass
class DebugfsHandover:
    """One direction (``in`` or ``out``) as debugfs shows it."""

    direction: str  # "incoming" or "outgoing"
    #: The decoded root FDT, when ``fdt`` is present and whole.
    fdt: KhoFdt | None = None
    #: Size of the ``fdt`` file, and the size its header declares.
    fdt_file_size: int | None = None
    fdt_totalsize: int | None = None
    subtrees: list[SubtreeView] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def subtree(self, name: str) -> SubtreeView | None:
        return next((s for s in self.subtrees if s.name == name), None)

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The decoded kexec-metadata fields, if the blob is there."""
        view = self.subtree(KEXEC_METADATA_NODE)
        return None if view is None else view.fields


@dataclass
class DebugfsState:
    """Everything decoded from one KHO debugfs tree."""

    root: str
    incoming: DebugfsHandover | None
    outgoing: DebugfsHandover | None
    scratch: list[ScratchArea] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def all_findings(self) -> list[Finding]:
        found = list(self.findings)
        for handover in (self.incoming, self.outgoing):
            if handover is not None:
                found += handover.findings
                for view in handover.subtrees:
                    found += view.findings
        return most_severe_first(found)


def read_debugfs_files(root: Path = DEFAULT_ROOT) -> dict[str, bytes]:
    """The files under a KHO debugfs root, by path relative to it.

    Bounded: at most ``MAX_FILES`` files of ``MAX_FILE_SIZE`` bytes each;
    symlinks are not followed.  Only reads.

    :raises DebugfsUnavailable: the root is missing or not readable.
    """
    if not root.is_dir():
        raise DebugfsUnavailable(
            f"{root} does not exist: KHO is disabled (kho=off), debugfs is not "
            "mounted (mount -t debugfs none /sys/kernel/debug), or the kernel "
            "lacks CONFIG_KEXEC_HANDOVER_DEBUGFS"
        )
    files: dict[str, bytes] = {}
    try:
        for directory, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(directory, name)
                if path.is_symlink() or not path.is_file():
                    continue
                if len(files) >= MAX_FILES:
                    raise DebugfsUnavailable(
                        f"{root} holds more than {MAX_FILES} files: not a KHO "
                        "debugfs directory"
                    )
                with open(path, "rb") as f:
                    files[path.relative_to(root).as_posix()] = f.read(MAX_FILE_SIZE + 1)
    except PermissionError as e:
        raise DebugfsUnavailable(
            f"cannot read {e.filename or root}: permission denied (run as root)"
        ) from e
    except OSError as e:
        raise DebugfsUnavailable(f"cannot read {root}: {e}") from e
    return files


def decode_debugfs(
    files: Mapping[str, bytes],
    byteorder: ByteOrder = "little",
    root: str = str(DEFAULT_ROOT),
) -> DebugfsState:
    """Decode a KHO debugfs tree given as ``{relative path: bytes}``.

    Paths may carry a leading ``kho/`` (as in the fixtures' snapshots).
    """
    tree = {_relative(path): data for path, data in files.items()}
    tree = {path: data for path, data in tree.items() if path}
    state = DebugfsState(
        root=root,
        incoming=_handover(tree, "in", byteorder),
        outgoing=_handover(tree, "out", byteorder),
    )
    if state.incoming is None and state.outgoing is None:
        state.findings.append(
            warning(
                "debugfs.empty",
                f"{root} has neither in/ nor out/: KHO is disabled (kho=off) "
                "or this is not a KHO debugfs directory",
                "debugfs",
            )
        )
    state.scratch, found = _scratch(tree)
    state.findings += found
    return state


def _relative(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "."]
    if parts and parts[0] == "kho":
        parts = parts[1:]
    return "/".join(parts)


def _handover(
    tree: Mapping[str, bytes], side: str, byteorder: ByteOrder
) -> DebugfsHandover | None:
    if not any(path.startswith(f"{side}/") for path in tree):
        return None
    direction = "incoming" if side == "in" else "outgoing"
    handover = DebugfsHandover(direction)
    blob = tree.get(f"{side}/fdt")
    if blob is None:
        if side == "out":
            handover.findings.append(
                info(
                    "debugfs.no-out-fdt",
                    "out/fdt is absent (7.2 registers it only on a cold boot); "
                    "the outgoing subtrees are read from out/sub_fdts",
                    direction,
                )
            )
        else:
            handover.findings.append(
                warning("debugfs.no-in-fdt", "in/fdt is absent", direction)
            )
    else:
        _root_fdt(handover, blob, byteorder)
    prefix = f"{side}/sub_fdts/"
    for path in sorted(p for p in tree if p.startswith(prefix)):
        name = path[len(prefix) :]
        data = tree[path]
        if len(data) > MAX_FILE_SIZE:
            handover.findings.append(
                warning(
                    "debugfs.file-too-large",
                    f"{path} is larger than {MAX_FILE_SIZE} bytes; not decoded",
                    direction,
                )
            )
            continue
        view = decode_subtree(name, data, byteorder, where=direction)
        handover.subtrees.append(view)
        _check_size(handover, name, len(data))
    return handover


def _root_fdt(handover: DebugfsHandover, blob: bytes, byteorder: ByteOrder) -> None:
    direction = handover.direction
    handover.fdt_file_size = len(blob)
    try:
        totalsize = fdt_header_totalsize(blob[:FDT_HEADER_SIZE])
    except FdtError as e:
        handover.findings.append(
            error("fdt.invalid", f"{direction} fdt file: {e}", direction)
        )
        return
    handover.fdt_totalsize = totalsize
    if totalsize > len(blob):
        handover.findings.append(
            warning(
                "debugfs.fdt-truncated",
                f"the {direction} fdt file has {len(blob)} bytes but its header "
                f"says {totalsize}: debugfs registered the FDT with its size at "
                "init and subtrees added later grew it; decoding the subtrees "
                "from sub_fdts instead",
                direction,
            )
        )
        return
    try:
        handover.fdt = decode_kho_fdt(blob[:totalsize], byteorder, direction)
    except FdtError as e:
        handover.findings.append(
            error("fdt.invalid", f"{direction} fdt file: {e}", direction)
        )


def _check_size(handover: DebugfsHandover, name: str, size: int) -> None:
    """A blob file must be as long as the root FDT's ``blob-size`` says."""
    if handover.fdt is None:
        return
    ref = handover.fdt.subtree(name)
    if ref is None:
        handover.findings.append(
            warning(
                "debugfs.subtree-not-in-fdt",
                f"sub_fdts/{name} has no node in the {handover.direction} FDT",
                handover.direction,
            )
        )
    elif ref.size is not None and ref.size != size:
        handover.findings.append(
            warning(
                "debugfs.blob-size-mismatch",
                f"sub_fdts/{name} has {size} bytes, the FDT's blob-size is {ref.size}",
                handover.direction,
            )
        )


def _hex_lines(data: bytes | None) -> list[int] | None:
    if data is None:
        return None
    values = []
    for line in data.decode("ascii", "replace").split()[:MAX_SCRATCH_LINES]:
        try:
            values.append(int(line, 16))
        except ValueError:
            return None
    return values


def _scratch(tree: Mapping[str, bytes]) -> tuple[list[ScratchArea], list[Finding]]:
    # 7.4 renames the scratch areas "bootmem" (out/bootmem_phys, bootmem_len).
    old = "out/scratch_phys" in tree or "out/scratch_len" in tree
    prefix = "out/scratch" if old else "out/bootmem"
    starts = _hex_lines(tree.get(f"{prefix}_phys"))
    sizes = _hex_lines(tree.get(f"{prefix}_len"))
    if starts is None and sizes is None:
        return [], []
    if starts is None or sizes is None or len(starts) != len(sizes):
        return [], [
            warning(
                "debugfs.scratch-mismatch",
                f"{prefix}_phys and {prefix}_len are missing, unreadable "
                "or of different lengths",
                "scratch",
            )
        ]
    return [ScratchArea(a, s) for a, s in zip(starts, sizes, strict=True)], []


def debugfs_chain_line(state: DebugfsState, release: str | None) -> str:
    """The kexec chain as debugfs tells it (same wording as a dump's)."""
    incoming = state.incoming.metadata if state.incoming else None
    outgoing = state.outgoing.metadata if state.outgoing else None
    current = release or (outgoing or {}).get("previous_release") or "(unknown)"
    if state.incoming is None and state.outgoing is None:
        return f"{current} [running; KHO disabled or no debugfs data, chain unknown]"
    nxt = (
        f" -> next: {outgoing['previous_release']}, count {outgoing['kexec_count']}"
        if outgoing and outgoing.get("valid")
        else " -> next: (no valid outgoing metadata)"
    )
    if incoming is None or not incoming.get("valid"):
        if state.incoming is None:
            return f"cold boot -> {current} [running, cold boot]{nxt}"
        return f"? -> {current} [running, kexec #?]{nxt}"
    count = incoming["kexec_count"]
    previous = incoming["previous_release"]
    if count == 1:
        before = f"cold boot -> {previous}"
    elif count > 1:
        kexecs = "1 kexec" if count == 2 else f"{count - 1} kexecs"
        before = f"cold boot -> ({kexecs}) -> {previous}"
    else:
        before = f"? -> {previous}"
    return f"{before} -> {current} [running, kexec #{count}]{nxt}"


def debugfs_to_dict(state: DebugfsState, release: str | None) -> dict[str, Any]:
    """JSON form (schema ``kho-drgn/debugfs/1``, see the README)."""

    def handover(h: DebugfsHandover | None) -> dict[str, Any] | None:
        if h is None:
            return None
        return {
            "fdt_file_size": h.fdt_file_size,
            "fdt_totalsize": h.fdt_totalsize,
            "compatible": h.fdt.compatible if h.fdt else None,
            "preserved_memory_map": h.fdt.memory_map_phys if h.fdt else None,
            "fdt_subtrees": (
                [
                    {"name": s.name, "preserved_data": s.phys, "blob_size": s.size}
                    for s in h.fdt.subtrees
                ]
                if h.fdt
                else None
            ),
            "subtrees": [view.to_dict() for view in h.subtrees],
        }

    return {
        "schema": "kho-drgn/debugfs/1",
        "root": state.root,
        "release": release,
        "chain": {"line": debugfs_chain_line(state, release)},
        "incoming": handover(state.incoming),
        "outgoing": handover(state.outgoing),
        "scratch": [{"addr": a.addr, "size": a.size} for a in state.scratch],
        "findings": [f.to_dict() for f in state.all_findings()],
    }


def host_byteorder() -> ByteOrder:
    """debugfs blobs are in the running CPU's byte order: this host's."""
    return "little" if sys.byteorder == "little" else "big"
