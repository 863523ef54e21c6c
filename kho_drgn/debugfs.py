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
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kho_drgn.abi import FDT_HEADER_SIZE, FDT_MAGIC, KEXEC_METADATA_NODE
from kho_drgn.chain import KexecChain, build_chain, format_chain
from kho_drgn.checks import check_debugfs_blob
from kho_drgn.fdt import (
    FdtError,
    KhoFdt,
    decode_kho_fdt,
    fdt_header_totalsize,
    fdt_invalid,
)
from kho_drgn.findings import Finding, error, info, most_severe_first, warning
from kho_drgn.metadata import KexecMetadata, decode_kexec_metadata
from kho_drgn.safefiles import NotRegularFile, file_kind, open_regular
from kho_drgn.state import Handover, KhoState, KhoStatus
from kho_drgn.subtrees import SubtreeView, decode_subtree, metadata_view
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
    #: The ``kexec-metadata`` blob, decoded once (its view is in ``subtrees``).
    kexec_metadata: KexecMetadata | None = None
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

    #: The kexec chain, worked out and cross-checked by :mod:`kho_drgn.chain`
    #: as for a dump (see :func:`debugfs_chain`).
    chain: KexecChain | None = None

    def all_findings(self) -> list[Finding]:
        found = list(self.findings)
        for handover in (self.incoming, self.outgoing):
            if handover is not None:
                found += handover.findings
                for view in handover.subtrees:
                    found += view.findings
        if self.chain is not None:
            found += self.chain.findings
        return most_severe_first(found)


@dataclass
class DebugfsTree:
    """The files read under a KHO debugfs root, and the entries skipped.

    ``files`` maps each regular file's path (relative to the root) to its
    bytes; ``skipped`` maps every other entry (FIFO, socket, device,
    symbolic link, unreadable directory) to why it was not read.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class DebugfsRootError(DebugfsUnavailable):
    """``--root`` names something that is not a directory."""


def _kind(mode: int) -> str:
    """What a file is, from its ``st_mode``, in words ("a FIFO")."""
    return f"a {file_kind(mode)}"


def _check_root(root: Path) -> None:
    try:
        mode = os.stat(root).st_mode
    except FileNotFoundError:
        raise DebugfsUnavailable(
            f"{root} does not exist: KHO is disabled (kho=off), debugfs is not "
            "mounted (mount -t debugfs none /sys/kernel/debug), or the kernel "
            "lacks CONFIG_KEXEC_HANDOVER_DEBUGFS"
        ) from None
    except PermissionError:
        raise DebugfsUnavailable(
            f"cannot read {root}: permission denied (run as root)"
        ) from None
    except OSError as e:
        raise DebugfsUnavailable(f"cannot read {root}: {e.strerror or e}") from None
    if not stat.S_ISDIR(mode):
        raise DebugfsRootError(
            f"{root} is {_kind(mode)}, not a directory: --root takes the KHO "
            f"debugfs directory ({DEFAULT_ROOT}) or a copy of it"
        )


def _read_regular(path: Path) -> bytes | str:
    """A regular file's first ``MAX_FILE_SIZE + 1`` bytes, or why not.

    Opened without following a link, non-blocking and checked again after
    opening (the entry may have changed since it was listed), so a FIFO or
    device slipped in is never read and never blocks.
    """
    try:
        file = open_regular(path, follow_links=False)
    except NotRegularFile:
        return f"{_kind(os.lstat(path).st_mode)}, not a regular file"
    except PermissionError:
        raise  # not root: the whole tree is unreadable, said once
    except OSError as e:
        return f"cannot open: {e.strerror or e}"
    with file:
        try:
            return file.read(MAX_FILE_SIZE + 1)
        except BlockingIOError:
            return "would block: not a regular file"


def read_debugfs_tree(root: Path = DEFAULT_ROOT) -> DebugfsTree:
    """Read a KHO debugfs root: every regular file, and what was skipped.

    Bounded: at most ``MAX_FILES`` entries, ``MAX_FILE_SIZE`` bytes a file.
    Only regular files are read (``lstat`` first, then opened
    ``O_NONBLOCK | O_NOFOLLOW`` and checked again); links are not followed;
    FIFOs, sockets, devices, links and unreadable directories are listed in
    ``skipped`` with the reason.  Only reads.

    :raises DebugfsRootError: ``root`` is not a directory.
    :raises DebugfsUnavailable: ``root`` is missing, or a permission error
        (not root), or more than ``MAX_FILES`` entries.
    """
    _check_root(root)
    tree = DebugfsTree()
    entries = 0

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    def walk_error(e: OSError) -> None:
        if isinstance(e, PermissionError):
            raise e
        where = Path(e.filename) if e.filename else root
        tree.skipped[rel(where) if where != root else "."] = (
            f"directory not readable: {e.strerror or e}"
        )

    try:
        for directory, dirnames, filenames in os.walk(
            root, onerror=walk_error, followlinks=False
        ):
            dirnames.sort()
            for name in list(dirnames):
                path = Path(directory, name)
                if os.path.islink(path):  # os.walk lists links to dirs here
                    dirnames.remove(name)
                    filenames.append(name)
            for name in sorted(filenames):
                entries += 1
                if entries > MAX_FILES:
                    raise DebugfsUnavailable(
                        f"{root} holds more than {MAX_FILES} entries: not a KHO "
                        "debugfs directory"
                    )
                path = Path(directory, name)
                try:
                    mode = os.lstat(path).st_mode
                except OSError as e:
                    tree.skipped[rel(path)] = f"cannot stat: {e.strerror or e}"
                    continue
                if stat.S_ISLNK(mode):
                    tree.skipped[rel(path)] = "a symbolic link (not followed)"
                    continue
                if not stat.S_ISREG(mode):
                    tree.skipped[rel(path)] = f"{_kind(mode)}, not a regular file"
                    continue
                data = _read_regular(path)
                if isinstance(data, str):
                    tree.skipped[rel(path)] = data
                else:
                    tree.files[rel(path)] = data
    except PermissionError as e:
        raise DebugfsUnavailable(
            f"cannot read {e.filename or root}: permission denied (run as root)"
        ) from e
    except OSError as e:
        raise DebugfsUnavailable(f"cannot read {root}: {e}") from e
    return tree


def read_debugfs_files(root: Path = DEFAULT_ROOT) -> dict[str, bytes]:
    """The regular files under a KHO debugfs root, by path relative to it
    (:func:`read_debugfs_tree` without the list of skipped entries)."""
    return read_debugfs_tree(root).files


def decode_debugfs(
    files: Mapping[str, bytes],
    byteorder: ByteOrder = "little",
    root: str = str(DEFAULT_ROOT),
    skipped: Mapping[str, str] | None = None,
) -> DebugfsState:
    """Decode a KHO debugfs tree given as ``{relative path: bytes}``.

    Paths may carry a leading ``kho/`` (as in the fixtures' snapshots).
    ``skipped`` (from :func:`read_debugfs_tree`) are entries that were not
    read, each an error finding: debugfs holds only regular files.
    """
    tree = {_relative(path): data for path, data in files.items()}
    tree = {path: data for path, data in tree.items() if path}
    unread = {_relative(path) for path in skipped or {}}
    state = DebugfsState(
        root=root,
        incoming=_handover(tree, "in", byteorder, unread),
        outgoing=_handover(tree, "out", byteorder, unread),
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
    for path, reason in sorted((skipped or {}).items()):
        state.findings.append(
            error(
                "debugfs.entry-skipped",
                f"{path!r} was not read: {reason} (debugfs has only regular "
                "files and directories)",
                "debugfs",
            )
        )
    return state


def _relative(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "."]
    if parts and parts[0] == "kho":
        parts = parts[1:]
    return "/".join(parts)


def _handover(
    tree: Mapping[str, bytes],
    side: str,
    byteorder: ByteOrder,
    unread: set[str] | frozenset[str] = frozenset(),
) -> DebugfsHandover | None:
    """One side of the tree; ``unread`` are entries that were there but
    skipped (not regular files): the side exists, its data is missing."""
    if not any(
        path.startswith(f"{side}/") or path == side for path in (*tree, *unread)
    ):
        return None
    direction = "incoming" if side == "in" else "outgoing"
    handover = DebugfsHandover(direction)
    blob = tree.get(f"{side}/fdt")
    # A skipped fdt entry has its own debugfs.entry-skipped finding.
    if blob is None and f"{side}/fdt" not in unread:
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
    elif blob is not None:
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
        if name == KEXEC_METADATA_NODE and data[:4] != FDT_MAGIC.to_bytes(4, "big"):
            handover.kexec_metadata = decode_kexec_metadata(
                data, byteorder, blob_size=len(data), where=direction
            )
            view = metadata_view(handover.kexec_metadata, len(data), name)
        else:
            view = decode_subtree(name, data, byteorder, where=direction)
        handover.subtrees.append(view)
        handover.findings += check_debugfs_blob(
            handover.fdt, handover.direction, name, len(data)
        )
    return handover


def _root_fdt(handover: DebugfsHandover, blob: bytes, byteorder: ByteOrder) -> None:
    direction = handover.direction
    handover.fdt_file_size = len(blob)
    try:
        totalsize = fdt_header_totalsize(blob[:FDT_HEADER_SIZE])
    except FdtError as e:
        handover.findings.append(fdt_invalid(f"{direction} fdt file", e, direction))
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
        handover.findings.append(fdt_invalid(f"{direction} fdt file", e, direction))


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


def debugfs_kho_state(state: DebugfsState, release: str | None) -> KhoState:
    """The debugfs tree as the handover model a dump gives (no kho_in, no
    addresses), so the chain and its checks are the dump's own."""
    outgoing_md = state.outgoing.kexec_metadata if state.outgoing else None
    if release is None and outgoing_md is not None and outgoing_md.valid:
        release = outgoing_md.previous_release  # what this kernel tells the next
    if state.incoming is not None:
        status = KhoStatus.KEXEC
    elif state.outgoing is not None:
        status = KhoStatus.COLD_BOOT
    else:
        status = KhoStatus.DISABLED

    def handover(h: DebugfsHandover | None) -> Handover | None:
        if h is None:
            return None
        views = [v for v in h.subtrees if v.kind != "kexec-metadata"]
        return Handover(
            h.direction, None, fdt=h.fdt, metadata=h.kexec_metadata, views=views
        )

    return KhoState(
        symbols=None,
        release=release,
        status=status,
        incoming=handover(state.incoming),
        outgoing=handover(state.outgoing),
    )


def debugfs_chain(state: DebugfsState, release: str | None) -> KexecChain:
    """The kexec chain of a debugfs tree, with the dump's cross-checks.

    Also kept in ``state.chain``, so its findings join the tree's.
    """
    state.chain = build_chain(debugfs_kho_state(state, release))
    return state.chain


def debugfs_chain_line(state: DebugfsState, release: str | None) -> str:
    """The kexec chain on one line, worded as for a dump (a running kernel),
    marked ``(!) ...`` when any finding of the tree is an error."""
    chain = state.chain if state.chain is not None else debugfs_chain(state, release)
    return format_chain(chain, live=True, findings=state.all_findings())


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

    from kho_drgn.report import chain_to_dict

    chain = state.chain if state.chain is not None else debugfs_chain(state, release)
    return {
        "schema": "kho-drgn/debugfs/1",
        "root": state.root,
        "release": release,
        "chain": chain_to_dict(chain, debugfs_chain_line(state, release)),
        "incoming": handover(state.incoming),
        "outgoing": handover(state.outgoing),
        "scratch": [{"addr": a.addr, "size": a.size} for a in state.scratch],
        "findings": [f.to_dict() for f in state.all_findings()],
    }


def host_byteorder() -> ByteOrder:
    """debugfs blobs are in the running CPU's byte order: this host's."""
    return "little" if sys.byteorder == "little" else "big"
