"""Finding the LUO state in a target, where the kernel keeps it.

The ``LUO`` KHO sub-node is only where the state starts.  In 7.2 the incoming
``luo_ser`` page is freed early in boot and reused, the session blocks are
freed once ``/dev/liveupdate`` is opened (the sessions then live as ``struct
luo_session`` on ``luo_session_global.incoming``), and outgoing sessions are
serialized only at kexec time (before that they exist only on
``luo_session_global.outgoing``).  So this module reads, in order:

* with DWARF: ``luo_global`` (live-update number, outgoing ``luo_ser``),
  ``luo_session_global`` (both session lists and the incoming block chain
  head), ``luo_flb_global`` (FLB headers and the registered FLBs);
* without DWARF: the same variables through kallsyms, at the offsets of the
  7.2 layout (x86_64, no lock debugging), each value checked before use;
* the ``LUO`` sub-node's blob, when it is still intact.

Decoding is :mod:`kho_drgn.luo`.  Preserved folios are checked against the
struct pages (``KHO_PAGE_MAGIC``) and the preserved-memory maps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from drgn import FaultError, Object, Program

from kho_drgn.abi import KHO_PAGE_MAGIC
from kho_drgn.checks import covered
from kho_drgn.findings import Finding, error, info, memory_missing, warning
from kho_drgn.luo import (
    LUO_NODE,
    LUO_V5,
    PRESERVING,
    RESTORED,
    RETRIEVED,
    LuoFile,
    LuoFlb,
    LuoSession,
    LuoSide,
    decode_luo_blob,
    decode_memfd_at,
    walk_flbs,
    walk_sessions,
)
from kho_drgn.memmap import PhysRange
from kho_drgn.metadata import decode_c_string
from kho_drgn.preserved import PreservedMemory, page_layout
from kho_drgn.state import Handover, KhoState
from kho_drgn.target import (
    TARGET_ERRORS,
    SymbolSource,
    read_phys,
    symbol_address,
    symbol_source,
    target_byteorder,
    virt_to_phys_or_none,
)

__all__ = ("KernelLuo", "LuoState", "luo_state", "read_kernel_luo")

#: A LUO blob is 32 bytes (luo-v5) or a one-page FDT (luo-v1).
BLOB_READ_MAX = 4096
#: Sessions / files / FLBs followed at most on one kernel list.
MAX_LIST = 1 << 14


class LuoKernelLayout(NamedTuple):
    """Offsets in the 7.2 LUO variables (x86_64, mutex 24, rwsem 32 bytes),
    measured with DWARF on 7.2.13; used only when there is no DWARF."""

    global_ser_out: int = 8
    global_liveupdate_num: int = 16
    sessions_incoming: int = 0
    sessions_outgoing: int = 128
    header_list: int = 8
    header_head_pa: int = 80
    flb_incoming_header: int = 0
    flb_outgoing_header: int = 24
    session_name: int = 0
    session_list: int = 64
    session_retrieved: int = 80
    session_files_list: int = 88
    file_fh: int = 0
    file_serialized_data: int = 16
    file_retrieve_status: int = 32
    file_list: int = 64
    file_token: int = 80
    handler_compatible: int = 8
    flb_global_list: int = 48
    flb_compatible: int = 8
    flb_private_list: int = 56
    flb_out_count: int = 72
    flb_out_data: int = 80
    flb_in_count: int = 128
    flb_in_data: int = 136
    flb_in_finished: int = 176
    flb_in_retrieve_status: int = 180


LAYOUT_7_2 = LuoKernelLayout()


@dataclass(eq=False)
class KernelLuo:
    """What the kernel's own LUO variables say (7.2+)."""

    source: str  # "dwarf" or "kallsyms"
    liveupdate_num: int | None = None
    ser_out_phys: int | None = None
    incoming_head_pa: int | None = None
    incoming_sessions: list[LuoSession] = field(default_factory=list)
    outgoing_sessions: list[LuoSession] = field(default_factory=list)
    incoming_flb_header: int | None = None
    outgoing_flb_header: int | None = None
    #: name -> registered ``liveupdate_flb`` state.
    registered_flbs: dict[str, dict[str, Any]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


@dataclass(eq=False)
class LuoState:
    """The LUO handover of a target: incoming and outgoing sides."""

    incoming: LuoSide | None
    outgoing: LuoSide | None
    #: "dwarf", "kallsyms" (kernel variables at the 7.2 offsets) or
    #: "blob-only" (only the KHO sub-nodes were read).
    kernel_source: str
    findings: list[Finding] = field(default_factory=list)

    def all_findings(self) -> Iterator[Finding]:
        yield from self.findings
        for side in (self.incoming, self.outgoing):
            if side is not None:
                yield from side.all_findings()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel_source": self.kernel_source,
            "incoming": None if self.incoming is None else self.incoming.to_dict(),
            "outgoing": None if self.outgoing is None else self.outgoing.to_dict(),
        }


def _has_luo(prog: Program) -> bool:
    return symbol_address(prog, "luo_global") is not None


def read_kernel_luo(
    prog: Program, serialized_form: str | None = LUO_V5
) -> KernelLuo | None:
    """The kernel's LUO variables; None when the kernel has none.

    With DWARF every part the kernel's types have is read (7.2+ fully; the
    session lists of 6.19/7.1 as far as their types match).  Without DWARF
    the 7.2 offsets are used only when this kernel's own LUO blob is
    ``serialized_form`` ``luo-v5``: the FDT-era structs (6.19, 7.1) differ.
    """
    if not _has_luo(prog) or symbol_address(prog, "luo_session_global") is None:
        return None
    if symbol_source(prog) is SymbolSource.DWARF:
        try:
            prog.type("struct luo_session")
            return _kernel_luo_dwarf(prog)
        except LookupError:
            pass  # DWARF without the LUO types: as without DWARF
    if serialized_form != LUO_V5:
        return None
    return _kernel_luo_kallsyms(prog)


def _part(kernel: KernelLuo, what: str, read: Any) -> None:
    """Run one read of the kernel's LUO state; a member this kernel's types
    lack skips that part, a missing page is a finding."""
    try:
        read()
    except AttributeError:
        pass  # another era's types: not this part
    except FaultError as e:
        kernel.findings.append(
            memory_missing(f"LUO kernel variables ({what}): {e}", "luo")
        )


def _kernel_luo_dwarf(prog: Program) -> KernelLuo:
    from drgn.helpers.linux.list import list_for_each_entry

    kernel = KernelLuo("dwarf")
    glob = prog["luo_global"]
    sessions = prog["luo_session_global"]

    def number() -> None:
        kernel.liveupdate_num = glob.liveupdate_num.value_()

    def ser_out() -> None:
        address = glob.luo_ser_out.value_()
        kernel.ser_out_phys = virt_to_phys_or_none(prog, address) if address else None

    def head() -> None:
        kernel.incoming_head_pa = sessions.incoming.block_set.head_pa.value_() or None

    def incoming() -> None:
        kernel.incoming_sessions = _sessions_dwarf(
            prog, sessions.incoming.list, True, kernel
        )

    def outgoing() -> None:
        kernel.outgoing_sessions = _sessions_dwarf(
            prog, sessions.outgoing.list, False, kernel
        )

    def flb_headers() -> None:
        flbs = prog["luo_flb_global"]
        kernel.incoming_flb_header = _virt_phys(prog, flbs.incoming.header_ser)
        kernel.outgoing_flb_header = _virt_phys(prog, flbs.outgoing.header_ser)

    def registered() -> None:
        flbs = prog["luo_flb_global"]
        for i, flb in enumerate(
            _bounded(
                list_for_each_entry(
                    "struct liveupdate_flb", flbs.list.address_of_(), "private.list"
                ),
                kernel,
                "registered FLBs",
            )
        ):
            name, _ = decode_c_string(flb.compatible.to_bytes_(), "FLB", "luo")
            private = flb.private
            kernel.registered_flbs[name or f"#{i}"] = {
                "incoming_data": private.incoming.data.value_(),
                "incoming_count": private.incoming.count.refs.counter.value_(),
                "retrieve_status": private.incoming.retrieve_status.value_(),
                "finished": bool(private.incoming.finished.value_()),
                "outgoing_data": private.outgoing.data.value_(),
                "outgoing_count": private.outgoing.count.refs.counter.value_(),
            }

    for what, read in (
        ("luo_global.liveupdate_num", number),
        ("luo_global.luo_ser_out", ser_out),
        ("incoming session blocks", head),
        ("incoming sessions", incoming),
        ("outgoing sessions", outgoing),
        ("FLB headers", flb_headers),
        ("registered FLBs", registered),
    ):
        _part(kernel, what, read)
    return kernel


def _virt_phys(prog: Program, pointer: Object) -> int | None:
    address = pointer.value_()
    return virt_to_phys_or_none(prog, address) if address else None


def _bounded(
    entries: Iterator[Object], kernel: KernelLuo, what: str
) -> Iterator[Object]:
    """List entries until one comes round again or :data:`MAX_LIST` are
    read: a damaged ``next`` pointer must not loop the walk (a finding)."""
    seen: set[int] = set()
    for obj in entries:
        address = obj.value_()
        if address in seen or len(seen) >= MAX_LIST:
            kernel.findings.append(
                error(
                    "luo.list-loop",
                    f"{what}: the kernel list comes back to an entry or has more "
                    f"than {MAX_LIST}; walked {len(seen)} (damaged list pointer)",
                    "luo",
                )
            )
            return
        seen.add(address)
        yield obj


def _sessions_dwarf(
    prog: Program, head: Object, incoming: bool, kernel: KernelLuo
) -> list[LuoSession]:
    from drgn.helpers.linux.list import list_for_each_entry

    sessions = []
    where = "incoming" if incoming else "outgoing"
    total_files = 0
    for obj in _bounded(
        list_for_each_entry("struct luo_session", head.address_of_(), "list"),
        kernel,
        f"{where} sessions",
    ):
        name, bad = decode_c_string(obj.name.to_bytes_(), "session name", "luo")
        if incoming:
            state = RETRIEVED if obj.retrieved.value_() else RESTORED
        else:
            state = PRESERVING
        session = LuoSession(
            name, state, 0, pa=virt_to_phys_or_none(prog, obj.value_())
        )
        session.findings += bad
        files = list_for_each_entry(
            "struct luo_file", obj.file_set.files_list.address_of_(), "list"
        )
        for f in _bounded(files, kernel, f"files of session {name!r}"):
            total_files += 1
            if total_files > MAX_LIST:
                kernel.findings.append(
                    error(
                        "luo.list-loop",
                        f"{where} sessions hold more than {MAX_LIST} files in "
                        "all: stopped (damaged list pointers)",
                        "luo",
                    )
                )
                break
            compat, _ = decode_c_string(f.fh.compatible.to_bytes_(), "handler", "luo")
            session.files.append(
                LuoFile(
                    compat,
                    f.token.value_(),
                    f.serialized_data.value_(),
                    source="kernel",
                    retrieve_status=f.retrieve_status.value_(),
                )
            )
        session.file_count = len(session.files)
        sessions.append(session)
    return sessions


def _kernel_luo_kallsyms(prog: Program) -> KernelLuo:
    """The same variables at the 7.2 offsets, each value checked."""
    layout = LAYOUT_7_2
    kernel = KernelLuo("kallsyms")
    glob = symbol_address(prog, "luo_global")
    sessions = symbol_address(prog, "luo_session_global")
    flbs = symbol_address(prog, "luo_flb_global")
    byteorder = target_byteorder(prog)
    try:
        if glob is not None:
            kernel.liveupdate_num = prog.read_word(glob + layout.global_liveupdate_num)
            ser_out = prog.read_word(glob + layout.global_ser_out)
            kernel.ser_out_phys = (
                virt_to_phys_or_none(prog, ser_out) if ser_out else None
            )
        if sessions is not None:
            incoming = sessions + layout.sessions_incoming
            head_pa = prog.read_word(incoming + layout.header_head_pa)
            kernel.incoming_head_pa = (
                head_pa if head_pa % 4096 == 0 and head_pa else None
            )
            kernel.incoming_sessions = _sessions_kallsyms(
                prog, incoming + layout.header_list, True, byteorder
            )
            kernel.outgoing_sessions = _sessions_kallsyms(
                prog,
                sessions + layout.sessions_outgoing + layout.header_list,
                False,
                byteorder,
            )
        if flbs is not None:
            kernel.registered_flbs = _flbs_kallsyms(prog, flbs + layout.flb_global_list)
            for attr, offset in (
                ("incoming_flb_header", layout.flb_incoming_header),
                ("outgoing_flb_header", layout.flb_outgoing_header),
            ):
                pointer = prog.read_word(flbs + offset)
                setattr(
                    kernel,
                    attr,
                    virt_to_phys_or_none(prog, pointer) if pointer else None,
                )
    except TARGET_ERRORS as e:
        kernel.findings.append(memory_missing(f"LUO kernel variables: {e}", "luo"))
    return kernel


def _list_entries(prog: Program, head: int, offset: int) -> Iterator[int]:
    """Addresses of the entries of a kernel list, bounded and loop-checked."""
    seen = {head}
    node = prog.read_word(head)
    while node > offset and node not in seen and len(seen) <= MAX_LIST:
        seen.add(node)
        yield node - offset
        node = prog.read_word(node)


def _flbs_kallsyms(prog: Program, head: int) -> dict[str, dict[str, Any]]:
    """The registered ``liveupdate_flb`` objects, at the 7.2 offsets."""
    layout = LAYOUT_7_2
    flbs: dict[str, dict[str, Any]] = {}

    def u32(address: int, signed: bool = False) -> int:
        return int.from_bytes(prog.read(address, 4), "little", signed=signed)

    for flb in _list_entries(prog, head, layout.flb_private_list):
        name, _ = decode_c_string(prog.read(flb + layout.flb_compatible, 48), "", "")
        if name is None:
            break  # not an FLB: the offsets do not fit this kernel
        flbs[name] = {
            "incoming_data": prog.read_word(flb + layout.flb_in_data),
            "incoming_count": u32(flb + layout.flb_in_count),
            "retrieve_status": u32(flb + layout.flb_in_retrieve_status, True),
            "finished": bool(prog.read(flb + layout.flb_in_finished, 1)[0]),
            "outgoing_data": prog.read_word(flb + layout.flb_out_data),
            "outgoing_count": u32(flb + layout.flb_out_count),
        }
    return flbs


def _sessions_kallsyms(
    prog: Program, head: int, incoming: bool, byteorder: str
) -> list[LuoSession]:
    layout = LAYOUT_7_2
    sessions = []
    for entry in _list_entries(prog, head, layout.session_list):
        name, _ = decode_c_string(prog.read(entry + layout.session_name, 64), "", "")
        if name is None:
            break  # not a session: the offsets do not fit this kernel
        retrieved = prog.read(entry + layout.session_retrieved, 1)[0]
        state = (RETRIEVED if retrieved else RESTORED) if incoming else PRESERVING
        session = LuoSession(name, state, 0, pa=virt_to_phys_or_none(prog, entry))
        for file in _list_entries(
            prog, entry + layout.session_files_list, layout.file_list
        ):
            fh = prog.read_word(file + layout.file_fh)
            compat, _ = decode_c_string(
                prog.read(fh + layout.handler_compatible, 48), "", ""
            )
            status = int.from_bytes(
                prog.read(file + layout.file_retrieve_status, 4),
                "little" if byteorder == "little" else "big",
                signed=True,
            )
            session.files.append(
                LuoFile(
                    compat,
                    prog.read_word(file + layout.file_token),
                    prog.read_word(file + layout.file_serialized_data),
                    source="kernel",
                    retrieve_status=status,
                )
            )
        session.file_count = len(session.files)
        sessions.append(session)
    return sessions


def _blob_side(
    prog: Program, handover: Handover | None, follow: bool = True
) -> LuoSide | None:
    """Decode the ``LUO`` sub-node of a handover; with ``follow``, walk the
    sessions and FLBs it points to."""
    if handover is None or handover.fdt is None:
        return None
    ref = handover.fdt.subtree(LUO_NODE)
    if ref is None or ref.phys is None:
        return None
    direction = handover.direction
    try:
        blob = read_phys(prog, ref.phys, min(ref.size or BLOB_READ_MAX, BLOB_READ_MAX))
    except FaultError:
        side = LuoSide(direction, blob="unreadable", blob_phys=ref.phys)
        side.findings.append(
            memory_missing(
                f"the {direction} LUO blob at physical {ref.phys:#x} is not in "
                "the dump",
                direction,
            )
        )
        return side
    return decode_luo_blob(
        blob,
        direction,
        target_byteorder(prog),
        blob_phys=ref.phys,
        read_phys=_reader(prog) if follow else None,
        missing=(FaultError,),
    )


def luo_state(
    prog: Program,
    state: KhoState,
    preserved: dict[str, PreservedMemory] | None = None,
) -> LuoState | None:
    """Read both LUO sides; None when the target has no LUO at all.

    The kernel's variables come first (they outlive the incoming blob and
    hold outgoing sessions before they are serialized); the blobs' pointers
    are followed where the kernel says nothing.
    """
    incoming = _blob_side(prog, state.incoming, follow=False)
    outgoing = _blob_side(prog, state.outgoing, follow=False)
    forms = {side.compatible for side in (incoming, outgoing) if side is not None}
    try:
        kernel = read_kernel_luo(prog, LUO_V5 if LUO_V5 in forms else None)
    except TARGET_ERRORS as e:
        kernel = KernelLuo("unreadable")
        kernel.findings.append(
            warning("luo.unreadable", f"LUO kernel variables: {e}", "luo")
        )
    if kernel is None:  # the blobs alone (the FDT era, or no symbols)
        incoming = _blob_side(prog, state.incoming)
        outgoing = _blob_side(prog, state.outgoing)
    if kernel is None and incoming is None and outgoing is None:
        return None
    result = LuoState(
        incoming,
        outgoing,
        kernel.source if kernel is not None else "blob-only",
    )
    if kernel is not None:
        result.findings += kernel.findings
    read = _reader(prog)
    byteorder = target_byteorder(prog)
    if kernel is not None:
        result.incoming = _merge_incoming(prog, incoming, kernel, state)
        result.outgoing = _merge_outgoing(prog, outgoing, kernel)
    elif incoming is not None and incoming.blob == "reused":
        incoming.findings.append(
            warning(
                "luo.blob-reused",
                f"the incoming LUO blob at physical {incoming.blob_phys:#x} is "
                "no luo_ser any more (freed and reused since boot) and the "
                "kernel's LUO variables cannot be found: no sessions",
                "incoming",
            )
        )
    if result.incoming is None and result.outgoing is None and not result.findings:
        return None  # LUO built in but not in use (liveupdate=off)
    if result.outgoing is not None and result.outgoing.blob == "reused":
        result.outgoing.findings.append(
            error(
                "luo.blob-invalid",
                f"the outgoing LUO blob at physical {result.outgoing.blob_phys:#x} "
                "is not a luo_ser: the next kernel would refuse it",
                "outgoing",
            )
        )
    for side in (result.incoming, result.outgoing):
        if side is None:
            continue
        for session in side.sessions:
            for file in session.files:
                if file.source == "kernel" and file.data_pa and file.memfd is None:
                    _kernel_memfd(read, file, byteorder, side.direction)
        _check_folios(prog, side, preserved or {})
    return result


def _reader(prog: Program) -> Any:
    return lambda address, size: read_phys(prog, address, size)


def _kernel_memfd(read: Any, file: LuoFile, byteorder: Any, where: str) -> None:
    """A kernel-list file's memfd data.  Once retrieved, the new kernel has
    consumed (freed) it: what reading it found is said as one info instead."""
    found: list[Finding] = []
    decode_memfd_at(
        read, file, byteorder, missing=(FaultError,), where=where, findings=found
    )
    if found and file.retrieve_status and file.retrieve_status > 0:
        found = [
            info(
                "luo.memfd-consumed",
                f"memfd token {file.token:#x} was retrieved: its serialized "
                "data has been consumed by the new kernel",
                where,
            )
        ]
    file.findings += found


def _merge_incoming(
    prog: Program, side: LuoSide | None, kernel: KernelLuo, state: KhoState
) -> LuoSide | None:
    """Incoming: the blob if intact, else (and for sessions) the kernel."""
    has_state = bool(
        kernel.incoming_sessions
        or kernel.incoming_head_pa
        or kernel.incoming_flb_header
    )
    if side is None and not has_state:
        return None
    if side is None:
        side = LuoSide("incoming", blob="absent")
    read = _reader(prog)
    byteorder = target_byteorder(prog)
    if side.blob in ("reused", "unreadable"):
        if side.blob == "reused":
            side.findings.append(
                info(
                    "luo.blob-reused",
                    f"the incoming LUO blob page at physical {side.blob_phys:#x} "
                    "was freed early in boot and reused, as the kernel does: "
                    "the state is read from the kernel's LUO variables",
                    "incoming",
                )
            )
        side.compatible = LUO_V5
        side.liveupdate_num = kernel.liveupdate_num
        side.sessions_pa = kernel.incoming_head_pa
        side.flbs_pa = kernel.incoming_flb_header
        side.sessions = []
        side.flbs = []
    # Deserialized sessions are on the list (and their blocks freed); else
    # the blocks, where the kernel keeps their head, else where the blob says.
    head = kernel.incoming_head_pa or (side.sessions_pa if side.blob == "intact" else 0)
    if kernel.incoming_sessions:
        side.source = "kernel"
        side.sessions = kernel.incoming_sessions
    elif head:
        side.source = "serialized"
        side.sessions = walk_sessions(
            read,
            head,
            byteorder,
            missing=(FaultError,),
            findings=side.findings,
            where="incoming",
        )
    flbs = kernel.incoming_flb_header or (side.flbs_pa if side.blob == "intact" else 0)
    if flbs:
        side.flbs = walk_flbs(
            read,
            flbs,
            byteorder,
            missing=(FaultError,),
            findings=side.findings,
            where="incoming",
        )
    if side.liveupdate_num is None:
        side.liveupdate_num = kernel.liveupdate_num
    _merge_registered(side.flbs, kernel, incoming=True)
    return side


def _merge_outgoing(
    prog: Program, side: LuoSide | None, kernel: KernelLuo
) -> LuoSide | None:
    """Outgoing: sessions are serialized only at kexec; before, the lists."""
    if side is None and not kernel.outgoing_sessions and not kernel.ser_out_phys:
        return None
    if side is None:
        side = LuoSide("outgoing", blob="absent")
        if kernel.ser_out_phys:
            try:
                blob = read_phys(prog, kernel.ser_out_phys, 32)
                side = decode_luo_blob(
                    blob,
                    "outgoing",
                    target_byteorder(prog),
                    blob_phys=kernel.ser_out_phys,
                )
            except FaultError:
                pass
    read, byteorder = _reader(prog), target_byteorder(prog)
    intact = side.blob == "intact"
    if intact and side.sessions_pa:  # serialized: the kexec was under way
        side.source = "serialized"
        side.sessions = walk_sessions(
            read,
            side.sessions_pa,
            byteorder,
            missing=(FaultError,),
            findings=side.findings,
            where="outgoing",
        )
    elif kernel.outgoing_sessions:
        side.source = "kernel"
        side.sessions = kernel.outgoing_sessions
    flbs = (side.flbs_pa if intact else 0) or kernel.outgoing_flb_header
    if flbs:
        side.flbs = walk_flbs(
            read,
            flbs,
            byteorder,
            missing=(FaultError,),
            findings=side.findings,
            where="outgoing",
        )
    if not side.flbs:
        # Serialized only at kexec: before, the registered FLBs hold the
        # outgoing state (files depending on each, and its data handle).
        side.flbs = [
            LuoFlb(
                name, state["outgoing_data"], state["outgoing_count"], source="kernel"
            )
            for name, state in kernel.registered_flbs.items()
            if state["outgoing_count"]
        ]
    _merge_registered(side.flbs, kernel, incoming=False)
    return side


def _merge_registered(flbs: list[LuoFlb], kernel: KernelLuo, incoming: bool) -> None:
    """Attach the registered FLBs' state to the serialized entries."""
    for flb in flbs:
        registered = kernel.registered_flbs.get(flb.name or "")
        if registered is None:
            continue
        flb.source = "serialized+kernel"
        if incoming:
            flb.retrieve_status = registered["retrieve_status"]
            flb.finished = registered["finished"]


def _check_folios(
    prog: Program, side: LuoSide, preserved: dict[str, PreservedMemory]
) -> None:
    """Each memfd folio must be preserved memory.

    Incoming: a folio not restored yet still carries ``KHO_PAGE_MAGIC`` in
    its struct page (or lies in the incoming map when that is whole);
    outgoing: it must lie in the outgoing map.
    """
    memory = preserved.get(side.direction)
    summary = memory.summary if memory is not None else None
    ranges = (
        summary.ranges
        if summary is not None
        and summary.complete
        and summary.blocks
        and not summary.ranges_truncated
        else None
    )
    layout = page_layout(prog) if side.direction == "incoming" else None
    byteorder = target_byteorder(prog)
    for session in side.sessions:
        for file in session.files:
            memfd = file.memfd
            if memfd is None or not memfd.folios:
                continue
            if session.state == RETRIEVED or (file.retrieve_status or 0) > 0:
                continue  # restored into the new kernel's page cache
            missing = []
            for folio in memfd.folios:
                folio.preserved = _folio_preserved(
                    prog, folio.pfn, layout, ranges, byteorder
                )
                if folio.preserved == "not-preserved":
                    missing.append(folio.pfn)
            if missing:
                memfd.findings.append(
                    warning(
                        "luo.folio-not-preserved",
                        f"session {session.name!r} memfd token {file.token:#x}: "
                        f"{len(missing)} folio(s) are not preserved memory "
                        f"(first pfn {missing[0]:#x})",
                        side.direction,
                    )
                )


def _folio_preserved(
    prog: Program,
    pfn: int,
    layout: Any,
    ranges: list[PhysRange] | None,
    byteorder: str,
) -> str | None:
    if layout is not None and pfn < layout.max_pfn:
        try:
            raw = prog.read(
                layout.vmemmap + pfn * layout.page_size + layout.private_offset, 8
            )
            private = int.from_bytes(raw, "little" if byteorder == "little" else "big")
            if private >> 32 == KHO_PAGE_MAGIC:
                return "page-magic"
        except TARGET_ERRORS:
            pass
    if ranges is not None:
        return "map" if covered(ranges, pfn * 4096, 4096) else "not-preserved"
    return "not-preserved" if layout is not None else None
