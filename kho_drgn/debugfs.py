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

``read_debugfs_tree``/``read_debugfs_files`` are the finders (file reads,
bounded); everything else works on snapshots (e.g. the fixtures'
``debugfs_base64``).  The files only stand in for target memory: each side
is decoded by :func:`kho_drgn.handover.decode_handover`, as a dump's
handover is, into the same :class:`~kho_drgn.handover.Handover`; the chain,
the JSON (:func:`debugfs_report` then :func:`kho_drgn.report.report_to_dict`)
and the text (:func:`kho_drgn.render.render_report`) are the dump's.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kho_drgn.abi import FDT_HEADER_SIZE
from kho_drgn.chain import KexecChain, build_chain
from kho_drgn.checks import check_debugfs_blob
from kho_drgn.fdt import FdtError, SubtreeRef, fdt_header_totalsize, fdt_invalid
from kho_drgn.findings import Finding, error, info, most_severe_first, warning
from kho_drgn.handover import FetchBlob, Handover, decode_handover
from kho_drgn.safefiles import NotRegularFile, file_kind, open_regular
from kho_drgn.state import KhoState, KhoStatus, note_metadata_absent
from kho_drgn.target import Scratch, ScratchArea

if TYPE_CHECKING:
    from kho_drgn.report import KhoReport

__all__ = (
    "DEFAULT_ROOT",
    "DebugfsRootError",
    "DebugfsState",
    "DebugfsTree",
    "DebugfsUnavailable",
    "debugfs_chain",
    "debugfs_kho_state",
    "debugfs_report",
    "decode_debugfs",
    "file_blobs",
    "host_byteorder",
    "read_debugfs_files",
    "read_debugfs_tree",
)

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


@dataclass(eq=False)
class DebugfsState:
    """Everything decoded from one KHO debugfs tree: the handovers in the
    dump's own model (:class:`~kho_drgn.handover.Handover`), the scratch
    areas, and what is wrong with the tree itself."""

    root: str
    incoming: Handover | None
    outgoing: Handover | None
    scratch: list[ScratchArea] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    #: The kexec chain, worked out and cross-checked by :mod:`kho_drgn.chain`
    #: as for a dump (see :func:`debugfs_chain`).
    chain: KexecChain | None = None

    def all_findings(self) -> list[Finding]:
        found = list(self.findings)
        for handover in (self.incoming, self.outgoing):
            if handover is not None:
                found += handover.all_findings()
        if self.chain is not None:
            found += self.chain.findings
        return most_severe_first(found)


@dataclass(eq=False)
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
    # As for a dump: metadata.absent per root FDT without the subtree, or
    # once that the kernel predates kexec-metadata.
    kho = debugfs_kho_state(state, None)
    note_metadata_absent(kho)
    state.findings = kho.findings
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
) -> Handover | None:
    """One side of the tree, fetched from its files and decoded as a dump's
    handover is; ``unread`` are entries that were there but skipped (not
    regular files): the side exists, its data is missing."""
    if not any(
        path.startswith(f"{side}/") or path == side for path in (*tree, *unread)
    ):
        return None
    direction = "incoming" if side == "in" else "outgoing"
    findings: list[Finding] = []
    prefix = f"{side}/sub_fdts/"
    blobs: dict[str, bytes] = {}
    for path in sorted(p for p in tree if p.startswith(prefix)):
        if len(tree[path]) > MAX_FILE_SIZE:
            findings.append(
                warning(
                    "debugfs.file-too-large",
                    f"{path} is larger than {MAX_FILE_SIZE} bytes; not decoded",
                    direction,
                )
            )
        else:
            blobs[path[len(prefix) :]] = tree[path]
    blob = tree.get(f"{side}/fdt")
    # A skipped fdt entry has its own debugfs.entry-skipped finding.
    if blob is None and f"{side}/fdt" not in unread:
        if side == "out":
            findings.append(
                info(
                    "debugfs.no-out-fdt",
                    "out/fdt is absent (7.2 registers it only on a cold boot); "
                    "the outgoing subtrees are read from out/sub_fdts",
                    direction,
                )
            )
        else:
            findings.append(warning("debugfs.no-in-fdt", "in/fdt is absent", direction))
    root, totalsize = None, None
    if blob is not None:
        root, totalsize = _root_fdt(blob, direction, findings)
    handover = decode_handover(
        direction,
        root,
        file_blobs(blobs),
        byteorder,
        root_what=f"{direction} fdt file",
        extra=[SubtreeRef(name, None, len(data)) for name, data in blobs.items()],
        findings=findings,
    )
    handover.fdt_file_size = None if blob is None else len(blob)
    handover.fdt_totalsize = totalsize
    for name, data in blobs.items():
        handover.findings += check_debugfs_blob(
            handover.fdt, direction, name, len(data)
        )
    return handover


def file_blobs(blobs: Mapping[str, bytes]) -> FetchBlob:
    """Subtree blobs from debugfs ``sub_fdts`` files, by sub-node name (None
    for a sub-node without a file: debugfs shows what it shows)."""

    def fetch(ref: SubtreeRef, size: int) -> bytes | None:
        data = blobs.get(ref.name)
        return None if data is None else data[:size]

    return fetch


def _root_fdt(
    blob: bytes, direction: str, findings: list[Finding]
) -> tuple[bytes | None, int | None]:
    """A root ``fdt`` file: (its FDT, the size its header declares).

    The FDT is None when the header is not an FDT's or declares more than
    the file holds: 7.2 registers ``out/fdt`` with the FDT's size at init,
    so subtrees added later leave the file truncated.
    """
    try:
        totalsize = fdt_header_totalsize(blob[:FDT_HEADER_SIZE])
    except FdtError as e:
        findings.append(fdt_invalid(f"{direction} fdt file", e, direction))
        return None, None
    if totalsize <= len(blob):
        return blob[:totalsize], totalsize
    findings.append(
        warning(
            "debugfs.fdt-truncated",
            f"the {direction} fdt file has {len(blob)} bytes but its header "
            f"says {totalsize}: debugfs registered the FDT with its size at "
            "init and subtrees added later grew it; decoding the subtrees "
            "from sub_fdts instead",
            direction,
        )
    )
    return None, totalsize


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
    """The debugfs tree as the state a dump gives (no kho_in, no symbols,
    no addresses of its own), so the chain, its checks, the JSON and the
    text are the dump's own.

    ``release`` defaults to what the outgoing metadata tells the next kernel
    (this kernel's release).
    """
    outgoing_md = state.outgoing.metadata if state.outgoing else None
    if release is None and outgoing_md is not None and outgoing_md.valid:
        release = outgoing_md.previous_release
    if state.incoming is not None:
        status = KhoStatus.KEXEC
    elif state.outgoing is not None:
        status = KhoStatus.COLD_BOOT
    else:
        status = KhoStatus.DISABLED
    return KhoState(
        symbols=None,
        release=release,
        status=status,
        incoming=state.incoming,
        outgoing=state.outgoing,
        scratch=(
            Scratch(None, len(state.scratch), list(state.scratch))
            if state.scratch
            else None
        ),
        findings=list(state.findings),
    )


def debugfs_chain(state: DebugfsState, release: str | None) -> KexecChain:
    """The kexec chain of a debugfs tree, with the dump's cross-checks.

    Also kept in ``state.chain``, so its findings join the tree's.
    """
    state.chain = build_chain(debugfs_kho_state(state, release))
    return state.chain


def debugfs_report(state: DebugfsState, release: str | None) -> KhoReport:
    """The tree as a report of the dump's form (no crash context, no maps),
    for :func:`kho_drgn.report.report_to_dict` and
    :func:`kho_drgn.render.render_report`; works out the chain again."""
    from kho_drgn.report import KhoReport, TargetInfo

    kho = debugfs_kho_state(state, release)
    state.chain = build_chain(kho)
    return KhoReport(
        target=TargetInfo(kind="debugfs", path=state.root, symbols=None),
        state=kho,
        chain=state.chain,
        crash=None,
        findings=state.all_findings(),
    )


def host_byteorder() -> ByteOrder:
    """debugfs blobs are in the running CPU's byte order: this host's."""
    return "little" if sys.byteorder == "little" else "big"
