"""Finding KHO state in a target (vmcore, live kernel or QEMU guest) with drgn.

This module only reads memory and hands bytes to the decoders.  It works with
full DWARF (``drgn -s vmlinux``) and, when the debug info is missing or lacks
the KHO types, through the symbols drgn takes from VMCOREINFO and kallsyms plus
the struct layouts of the detected ABI.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from drgn import (
    FaultError,
    Object,
    ObjectNotFoundError,
    PlatformFlags,
    Program,
    ProgramFlags,
    SymbolIndex,
    offsetof,
    sizeof,
)

from kho_drgn.abi import (
    FDT_HEADER_SIZE,
    KEXEC_METADATA_V1,
    KHO_LAYOUTS,
    KHO_SCRATCH_ENTRY_SIZE,
    EraDecision,
    KhoLayout,
    MetadataLayout,
    decide_kho_era,
    layout_by_era,
)
from kho_drgn.errors import TARGET_ERRORS
from kho_drgn.fdt import FdtError, fdt_header_totalsize
from kho_drgn.findings import Finding, error, memory_missing, warning
from kho_drgn.metadata import decode_c_string
from kho_drgn.vmcoreinfo import VmcoreInfo, read_vmcoreinfo

if TYPE_CHECKING:
    from kho_drgn.kallsyms import KallsymsLookup

__all__ = (
    "KHO_FUNCTIONS",
    "MAX_SCRATCH_AREAS",
    "TARGET_ERRORS",
    "ByteOrder",
    "KhoIn",
    "KhoReadError",
    "KhoTarget",
    "Scratch",
    "ScratchArea",
    "SymbolSource",
    "decode_scratch_array",
    "has_kho",
    "has_kho_functions",
    "is_live",
    "kexec_metadata_layout",
    "kho_enabled",
    "kho_layout",
    "kho_out_fdt_address",
    "kho_target",
    "read_fdt",
    "read_kho_in",
    "read_phys",
    "read_scratch",
    "running_release",
    "symbol_address",
    "symbol_source",
    "target_byteorder",
    "virt_to_phys_or_none",
)

ByteOrder = Literal["little", "big"]

_TARGET_KEY = "kho_drgn.target"


class KhoReadError(Exception):
    """The target could not be read where KHO state must be; says why."""


class SymbolSource(str, enum.Enum):
    """How kho-drgn located the KHO variables."""

    DWARF = "dwarf"  # vmlinux debug info with the KHO types
    KALLSYMS = "kallsyms"  # ELF/kallsyms symbols + ABI layouts, no KHO types

    def __str__(self) -> str:
        return self.value


@dataclass(eq=False)
class KhoTarget:
    """What kho-drgn needs to know about one Program, worked out once.

    Kept in ``prog.cache`` (see :func:`kho_target`), so every reader shares the
    byte order, the symbol source and VMCOREINFO instead of asking drgn again.
    The kallsyms index is kho-drgn's own: it is never registered on the
    Program, so the caller's symbol lookups are the same before and after.
    """

    byteorder: ByteOrder
    live: bool
    symbols: SymbolSource
    vmcoreinfo: VmcoreInfo | None
    #: drgn's index of the kallsyms tables VMCOREINFO names (no-DWARF only),
    #: loaded on first use; None until then or when it cannot be built.
    kallsyms: SymbolIndex | None = None
    #: Why the kallsyms index could not be built, once that was tried
    #: (:data:`KALLSYMS_MISSING` when its tables are not in the dump).
    kallsyms_error: str | None = None
    _kallsyms_tried: bool = False
    #: The few-symbols reader of the same tables (no-DWARF only), checked
    #: against VMCOREINFO; None until tried, or when it cannot be trusted.
    kallsyms_lookup: KallsymsLookup | None = None
    _lookup_tried: bool = False

    def fast_kallsyms(self, prog: Program) -> KallsymsLookup | None:
        """Look up single names without decoding every symbol (see
        :mod:`kho_drgn.kallsyms`); None means: use the full index."""
        if not self._lookup_tried:
            self._lookup_tried = True
            if "kallsyms" not in prog.enabled_symbol_finders():
                self.kallsyms_lookup = _load_kallsyms_lookup(prog, self)
        return self.kallsyms_lookup

    def kallsyms_index(self, prog: Program) -> SymbolIndex | None:
        """The private kallsyms index of ``prog``, built on first use."""
        if not self._kallsyms_tried:
            self._kallsyms_tried = True
            if "kallsyms" not in prog.enabled_symbol_finders():
                # The caller's own kallsyms finder, when enabled, already
                # answers prog.symbol(); do not load a second index.
                self.kallsyms, self.kallsyms_error = _load_kallsyms(prog)
        return self.kallsyms


def kho_target(prog: Program) -> KhoTarget:
    """The target context of ``prog``, made on first use and cached."""
    target: KhoTarget | None = prog.cache.get(_TARGET_KEY)
    if target is None:
        platform = prog.platform
        little = platform is None or bool(
            platform.flags & PlatformFlags.IS_LITTLE_ENDIAN
        )
        target = KhoTarget(
            byteorder="little" if little else "big",
            live=bool(prog.flags & ProgramFlags.IS_LIVE),
            symbols=_detect_symbol_source(prog),
            vmcoreinfo=read_vmcoreinfo(prog),
        )
        prog.cache[_TARGET_KEY] = target
    return target


def _detect_symbol_source(prog: Program) -> SymbolSource:
    try:
        prog.type("struct kho_in")
        return SymbolSource.DWARF
    except TARGET_ERRORS:
        return SymbolSource.KALLSYMS


#: ``KhoTarget.kallsyms_error`` when the tables are not in the dump.
KALLSYMS_MISSING = "missing"


def _load_kallsyms_lookup(prog: Program, target: KhoTarget) -> KallsymsLookup | None:
    """kho-drgn's own reader of the kallsyms tables, if it checks out."""
    # Imported here: only a target without DWARF needs it.
    from kho_drgn.kallsyms import kallsyms_lookup, read_kallsyms_tables

    info = target.vmcoreinfo
    if info is None or target.live:
        return None  # a live kernel's /proc/kallsyms goes through drgn
    symbols = {
        key[len("SYMBOL(") : -1]: value
        for key in info.entries
        if key.startswith("SYMBOL(") and (value := info.number(key)) is not None
    }
    try:
        tables = read_kallsyms_tables(
            lambda address, size: prog.read(address, size), symbols, target.byteorder
        )
    except TARGET_ERRORS:
        return None
    return None if tables is None else kallsyms_lookup(tables, symbols)


def _load_kallsyms(prog: Program) -> tuple[SymbolIndex | None, str | None]:
    """drgn's kallsyms index from the tables VMCOREINFO names, or why not."""
    try:
        from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

        return load_vmlinux_kallsyms(prog), None
    except FaultError:
        return None, KALLSYMS_MISSING
    except TARGET_ERRORS as e:
        return None, str(e) or type(e).__name__


def target_byteorder(prog: Program) -> ByteOrder:
    """The target CPU's byte order (KHO writes u64 properties in it)."""
    return kho_target(prog).byteorder


def is_live(prog: Program) -> bool:
    return kho_target(prog).live


def read_phys(prog: Program, address: int, size: int) -> bytes:
    """Read physical memory, falling back to the direct map.

    Physical reads work in dumps and in QEMU guests; a local live kernel
    (/proc/kcore) may only offer virtual addresses, so retry through
    ``phys_to_virt`` there.  Every physical reader goes through here.

    :raises FaultError: if the memory is not in the target (e.g. filtered out
        of a kdump).
    """
    try:
        return bytes(prog.read(address, size, True))
    except FaultError:
        if not is_live(prog):
            raise
    from drgn.helpers.linux.mm import phys_to_virt

    return bytes(prog.read(phys_to_virt(prog, address).value_(), size))


def symbol_source(prog: Program) -> SymbolSource:
    """Whether the KHO types are in the debug info (decided once per Program)."""
    return kho_target(prog).symbols


def kallsyms_unavailable_reason(prog: Program) -> str:
    """Why the kallsyms tables gave no symbols, for an error message: not
    named in VMCOREINFO, named but cut from the dump, or damaged."""
    target = kho_target(prog)
    info = target.vmcoreinfo
    named = (
        [k for k in info.entries if k.startswith("SYMBOL(kallsyms_")] if info else []
    )
    if not named:
        return "no kallsyms in VMCOREINFO"
    target.kallsyms_index(prog)
    problem = target.kallsyms_error
    if problem == KALLSYMS_MISSING:
        return (
            "the kallsyms tables VMCOREINFO names are not in the dump "
            "(truncated or filtered?)"
        )
    if problem is not None:
        return f"the kallsyms tables VMCOREINFO names are damaged ({problem})"
    return "the kallsyms tables VMCOREINFO names hold no kernel symbols"


def symbol_address(prog: Program, name: str) -> int | None:
    """Address of a kernel symbol; None if absent.

    Asks the Program's own symbol finders (DWARF/ELF, or kallsyms if the
    caller registered it), then, without the KHO types, kho-drgn's private
    kallsyms index, then drgn's objects.
    """
    try:
        return int(prog.symbol(name).address)
    except TARGET_ERRORS:
        pass
    target = kho_target(prog)
    if target.symbols is SymbolSource.KALLSYMS:
        fast = target.fast_kallsyms(prog)
        if fast is not None:
            from kho_drgn.kallsyms import KallsymsError

            try:
                return fast.address(name)
            except KallsymsError:
                target.kallsyms_lookup = None  # damaged: drgn's index from now on
        index = target.kallsyms_index(prog)
        if index is not None:
            found = index(prog, name, None, True)
            if found:
                return int(found[0].address)
    try:
        address = prog[name].address_
        return None if address is None else int(address)
    except TARGET_ERRORS:
        return None


def _dwarf_object(prog: Program, name: str) -> Object | None:
    if symbol_source(prog) is not SymbolSource.DWARF:
        return None
    try:
        return prog[name]
    except ObjectNotFoundError:
        return None


def running_release(prog: Program) -> str | None:
    """The running kernel's release (``uname -r``), from VMCOREINFO or uts."""
    try:
        return str(prog["UTS_RELEASE"].string_().decode("utf-8", "replace"))
    except TARGET_ERRORS:
        return None


def has_kho(prog: Program) -> bool:
    """True when the kernel was built with CONFIG_KEXEC_HANDOVER."""
    symbol_source(prog)
    return symbol_address(prog, "kho_in") is not None or (
        symbol_address(prog, "kho_out") is not None
    )


#: Exported KHO functions: in kallsyms even without CONFIG_KALLSYMS_ALL.
KHO_FUNCTIONS = ("kho_is_enabled", "kho_add_subtree", "kho_preserve_folio")


def has_kho_functions(prog: Program) -> bool:
    """True when KHO's functions are known: KHO is built in even if its
    variables cannot be found (kallsyms without data symbols)."""
    return any(symbol_address(prog, name) is not None for name in KHO_FUNCTIONS)


def kho_enabled(prog: Program) -> bool | None:
    """The ``kho_enable`` flag (``kho=`` on the command line), if readable."""
    obj = _dwarf_object(prog, "kho_enable")
    try:
        if obj is not None:
            return bool(obj.value_())
        address = symbol_address(prog, "kho_enable")
        if address is None:
            return None
        return bool(prog.read(address, 1)[0])
    except TARGET_ERRORS:
        return None


@dataclass(eq=False)
class KhoIn:
    """What the running kernel recorded about the handover it received.

    ``previous_release``/``kexec_count`` are the copies the kernel made from
    the incoming ``kexec-metadata`` at boot (Linux 7.1+); they survive even if
    the blob is damaged later.
    """

    fdt_phys: int
    scratch_phys: int
    previous_release: str | None
    kexec_count: int | None
    has_metadata_copy: bool
    findings: list[Finding] = field(default_factory=list)


def kho_layout(prog: Program) -> tuple[KhoLayout, list[Finding]]:
    """The era layout of ``kho_in``/``kho_out`` (no DWARF), decided once."""
    decision = kho_era(prog)
    if decision.problem is None:
        return decision.layout, []
    if decision.chosen_by == "default":
        return decision.layout, [
            warning("symbols.layout-guess", decision.problem, "target")
        ]
    return decision.layout, [
        warning("symbols.era-mismatch", decision.problem, "target")
    ]


_ERA_KEY = "kho_drgn.era"


def kho_era(prog: Program) -> EraDecision:
    """Which era's layout fits this kernel, from the dump's own facts: DWARF
    types when present, then the root FDT compatible found through each
    era's offsets, then the release (:func:`kho_drgn.abi.decide_kho_era`)."""
    cached = prog.cache.get(_ERA_KEY)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    if symbol_source(prog) is SymbolSource.DWARF:
        decision = _era_from_dwarf(prog)
    else:
        decision = decide_kho_era(running_release(prog), _probe_eras(prog))
    prog.cache[_ERA_KEY] = decision
    return decision


def _era_from_dwarf(prog: Program) -> EraDecision:
    names = {m.name for m in prog.type("struct kho_in").members or ()}
    try:
        out_names = {m.name for m in prog.type("struct kho_out").members or ()}
    except TARGET_ERRORS:
        out_names = set()
    if "previous_release" in names:
        era = "7.1+"
    elif "ser" in out_names:
        era = "6.16-6.18"
    else:
        era = "6.19-7.0"
    return EraDecision(
        layout_by_era(era), "dwarf", (f"DWARF struct kho_in/kho_out ({era})",)
    )


def _probe_eras(prog: Program) -> dict[str, str | None]:
    """For each era: the root FDT compatible its offsets lead to, if any."""
    probes: dict[str, str | None] = {}
    kho_in = symbol_address(prog, "kho_in")
    kho_out = symbol_address(prog, "kho_out")
    for _, layout in KHO_LAYOUTS:
        found = None
        try:
            if kho_in is not None:
                phys = prog.read_word(kho_in + layout.in_fdt_phys)
                found = _compatible_at(prog, phys, True) if phys else None
            if found is None and kho_out is not None:
                address = prog.read_word(kho_out + layout.out_fdt)
                if address and layout.out_fdt_is_page:
                    address = _page_to_virt_vmcoreinfo(prog, address) or 0
                found = _compatible_at(prog, address, False) if address else None
        except TARGET_ERRORS:
            found = None
        probes[layout.era] = found
    return probes


def _compatible_at(prog: Program, address: int, physical: bool) -> str | None:
    """The root ``compatible`` of an FDT at ``address``, if one is there."""
    from kho_drgn.fdt import decode_kho_fdt

    try:
        blob = read_fdt(prog, address, physical, 1 << 16)
        return decode_kho_fdt(blob).compatible
    except (FdtError, *TARGET_ERRORS):
        return None


def read_kho_in(prog: Program) -> KhoIn | None:
    """Read ``kho_in``; None if the kernel has no such variable.

    :raises KhoReadError: if the variable exists but cannot be read.
    """
    byteorder = target_byteorder(prog)
    obj = _dwarf_object(prog, "kho_in")
    try:
        if obj is not None:
            return _kho_in_from_object(obj)
        address = symbol_address(prog, "kho_in")
        if address is None:
            return None
        layout, findings = kho_layout(prog)
        size = max(layout.in_kexec_count or 0, layout.in_scratch_phys) + 8
        raw = prog.read(address, size)
    except FaultError as e:
        raise KhoReadError(
            f"kho_in is not in the dump (truncated or filtered?): {e}"
        ) from e

    def u64(offset: int) -> int:
        return int.from_bytes(raw[offset : offset + 8], byteorder)

    kho_in = KhoIn(
        fdt_phys=u64(layout.in_fdt_phys),
        scratch_phys=u64(layout.in_scratch_phys),
        previous_release=None,
        kexec_count=None,
        has_metadata_copy=layout.in_previous_release is not None,
        findings=findings,
    )
    release_at, count_at = layout.in_previous_release, layout.in_kexec_count
    if release_at is not None and count_at is not None:
        kho_in.previous_release, found = decode_c_string(
            raw[release_at : release_at + layout.in_previous_release_size],
            "kho_in.previous_release",
            "incoming",
        )
        kho_in.findings.extend(found)
        kho_in.kexec_count = int.from_bytes(raw[count_at : count_at + 4], byteorder)
    return kho_in


def _kho_in_from_object(obj: Object) -> KhoIn:
    try:
        scratch_phys = obj.scratch_phys.value_()
    except AttributeError:  # 7.4 renames the scratch areas "bootmem"
        scratch_phys = obj.bootmem_phys.value_()
    kho_in = KhoIn(
        fdt_phys=obj.fdt_phys.value_(),
        scratch_phys=scratch_phys,
        previous_release=None,
        kexec_count=None,
        has_metadata_copy=False,
    )
    try:
        release = obj.previous_release
        count = obj.kexec_count
    except AttributeError:
        return kho_in  # before Linux 7.1: no metadata copy in kho_in
    kho_in.has_metadata_copy = True
    kho_in.previous_release, kho_in.findings = decode_c_string(
        release.to_bytes_(), "kho_in.previous_release", "incoming"
    )
    kho_in.kexec_count = count.value_()
    return kho_in


def kho_out_fdt_address(prog: Program) -> int | None:
    """Virtual (direct-map) address of the outgoing root FDT; None if NULL.

    7.x keeps it in ``kho_out.fdt``; 6.16..6.18 kept a ``struct page *`` in
    ``kho_out.ser.fdt`` (formatted only at finalize).

    :raises KhoReadError: if ``kho_out`` exists but cannot be read.
    """
    obj = _dwarf_object(prog, "kho_out")
    try:
        if obj is not None:
            try:
                return obj.fdt.value_() or None
            except AttributeError:
                from drgn.helpers.linux.mm import page_to_virt

                page = obj.ser.fdt
                return page_to_virt(page).value_() if page else None
        base = symbol_address(prog, "kho_out")
        if base is None:
            return None
        layout, _ = kho_layout(prog)
        address = prog.read_word(base + layout.out_fdt)
        if address and layout.out_fdt_is_page:
            return _page_to_virt_vmcoreinfo(prog, address)
    except FaultError as e:
        raise KhoReadError(
            f"kho_out is not in the dump (truncated or filtered?): {e}"
        ) from e
    return address or None


def kho_out_finalized(prog: Program) -> bool | None:
    """``kho_out.finalized`` on kernels whose outgoing FDT exists only once
    KHO was finalized (6.16..6.18); None on later kernels or if unreadable.

    Before finalization ``kho_out.ser.fdt`` points at a page that was never
    formatted: the flag must be checked before the FDT is read.
    """
    obj = _dwarf_object(prog, "kho_out")
    try:
        if obj is not None:
            try:
                obj.ser.fdt  # noqa: B018 - only the page-pointer era has ser
                return bool(obj.finalized.value_())
            except AttributeError:
                return None
        base = symbol_address(prog, "kho_out")
        if base is None:
            return None
        layout, _ = kho_layout(prog)
        if layout.out_finalized is None:
            return None
        return bool(prog.read(base + layout.out_finalized, 1)[0])
    except TARGET_ERRORS:
        return None


def _page_to_virt_vmcoreinfo(prog: Program, page: int) -> int | None:
    """``page_to_virt`` from VMCOREINFO's vmemmap base and SIZE(page)."""
    info = kho_target(prog).vmcoreinfo
    vmemmap = info.number("SYMBOL(vmemmap)") if info else None
    page_size = info.number("SIZE(page)") if info else None
    if vmemmap is None or not page_size or page < vmemmap:
        return None
    phys = ((page - vmemmap) // page_size) * prog["PAGE_SIZE"].value_()
    base = symbol_address(prog, "page_offset_base")
    return None if base is None else prog.read_word(base) + phys


def virt_to_phys_or_none(prog: Program, address: int) -> int | None:
    """Physical address of a direct-map address, if it can be worked out.

    drgn's helper needs DWARF; without it, x86_64's ``page_offset_base``
    (a plain symbol) gives the direct map's base.
    """
    try:
        from drgn.helpers.linux.mm import virt_to_phys

        return int(virt_to_phys(prog, address).value_())
    except Exception:  # drgn raises a bare Exception when it lacks the offset
        pass
    base_symbol = symbol_address(prog, "page_offset_base")
    if base_symbol is None:
        return None
    try:
        base = prog.read_word(base_symbol)
    except FaultError:
        return None
    return address - base if address >= base else None


def read_fdt(prog: Program, address: int, physical: bool, max_size: int) -> bytes:
    """Read a whole FDT from the target: header first, then ``totalsize``.

    :raises FaultError: if the memory is not in the target.
    :raises FdtError: if the header is not an FDT or ``totalsize`` is absurd.
    """

    def read(addr: int, size: int) -> bytes:
        return read_phys(prog, addr, size) if physical else prog.read(addr, size)

    header = read(address, FDT_HEADER_SIZE)
    totalsize = fdt_header_totalsize(header)
    if totalsize < FDT_HEADER_SIZE or totalsize > max_size:
        raise FdtError(
            f"FDT header totalsize {totalsize} is out of range "
            f"({FDT_HEADER_SIZE}..{max_size} bytes)"
        )
    return read(address, totalsize)


def kexec_metadata_layout(prog: Program) -> MetadataLayout:
    """``struct kho_kexec_metadata`` from DWARF when present, else the v1 ABI."""
    if symbol_source(prog) is not SymbolSource.DWARF:
        return KEXEC_METADATA_V1
    try:
        type_ = prog.type("struct kho_kexec_metadata")
        release = type_.member("previous_release").type
        return MetadataLayout(
            size=sizeof(type_),
            version_offset=offsetof(type_, "version"),
            release_offset=offsetof(type_, "previous_release"),
            release_size=sizeof(release),
            count_offset=offsetof(type_, "kexec_count"),
            source="dwarf",
        )
    except TARGET_ERRORS:
        return KEXEC_METADATA_V1


#: More scratch areas than this is corruption (the kernel has lowmem, global
#: and one per NUMA node).
MAX_SCRATCH_AREAS = 1024


@dataclass(eq=False)
class ScratchArea:
    """One ``struct kho_scratch``: memory the next kernel may boot from."""

    addr: int
    size: int


@dataclass(eq=False)
class Scratch:
    """The scratch areas: the array ``kho_scratch`` points to, and its count.

    After a KHO boot the kernel adopts the array the previous kernel handed
    over, so ``array_phys`` equals ``kho_in.scratch_phys``.
    """

    array_phys: int | None
    count: int
    areas: list[ScratchArea] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: The array at ``kho_in.scratch_phys`` when it is not ``areas`` (the
    #: kernel did not adopt it); None when adopted or not a KHO boot.
    handed_over: list[ScratchArea] | None = None


#: The scratch array and its count: names up to 7.3, then 7.4's "bootmem"
#: rename (announced; inferred from the rename patch, not seen in a dump).
SCRATCH_SYMBOLS = (
    ("kho_scratch", "kho_scratch_cnt"),
    ("kho_bootmem", "kho_bootmem_cnt"),
)


def scratch_symbol_names(prog: Program) -> tuple[str, str]:
    """The (array, count) symbol names this kernel uses for scratch areas."""
    for names in SCRATCH_SYMBOLS:
        if symbol_address(prog, names[0]) is not None:
            return names
    return SCRATCH_SYMBOLS[0]


def read_scratch(prog: Program) -> Scratch | None:
    """Read ``kho_scratch``/``kho_scratch_cnt``; None if the kernel lacks them."""
    order = target_byteorder(prog)
    array_name, count_name = scratch_symbol_names(prog)
    try:
        ptr_obj = _dwarf_object(prog, array_name)
        cnt_obj = _dwarf_object(prog, count_name)
        if ptr_obj is not None and cnt_obj is not None:
            pointer, count = ptr_obj.value_(), cnt_obj.value_()
        else:
            ptr_sym = symbol_address(prog, array_name)
            cnt_sym = symbol_address(prog, count_name)
            if ptr_sym is None or cnt_sym is None:
                return None
            pointer = prog.read_word(ptr_sym)
            count = int.from_bytes(prog.read(cnt_sym, 4), order)
    except FaultError as e:
        return Scratch(
            None,
            0,
            findings=[memory_missing(f"kho_scratch: {e}", "scratch")],
        )
    scratch = Scratch(
        array_phys=virt_to_phys_or_none(prog, pointer) if pointer else None,
        count=count,
    )
    if not pointer or not count:
        return scratch
    if count > MAX_SCRATCH_AREAS:
        scratch.findings.append(
            error(
                "scratch.count-implausible",
                f"kho_scratch_cnt is {count}; reading the first {MAX_SCRATCH_AREAS}",
                "scratch",
            )
        )
        count = MAX_SCRATCH_AREAS
    try:
        raw = prog.read(pointer, count * KHO_SCRATCH_ENTRY_SIZE)
    except FaultError:
        scratch.findings.append(
            memory_missing(
                f"kho_scratch array at {pointer:#x} is not in the dump",
                "scratch",
            )
        )
        return scratch
    scratch.areas = decode_scratch_array(raw, order)
    return scratch


def decode_scratch_array(raw: bytes, byteorder: ByteOrder) -> list[ScratchArea]:
    """Decode packed ``struct kho_scratch`` {addr, size} (u64 each) entries."""
    step = KHO_SCRATCH_ENTRY_SIZE
    return [
        ScratchArea(
            addr=int.from_bytes(raw[i : i + 8], byteorder),
            size=int.from_bytes(raw[i + 8 : i + 16], byteorder),
        )
        for i in range(0, len(raw) - step + 1, step)
    ]
