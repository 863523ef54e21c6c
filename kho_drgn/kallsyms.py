"""A few kernel symbols from the kallsyms tables, without decoding them all.

Without vmlinux, kho-drgn needs a dozen addresses (``kho_in``, ``kho_out``,
``tainted_mask``, ...).  drgn's ``load_vmlinux_kallsyms`` decodes every
symbol into an index, which costs more than the rest of the report.  The
tables need not be decoded to find one name: scripts/kallsyms.c compresses
deterministically.  Each symbol (its type letter, then its name)
starts as its own bytes; then, for each learned token from code 255 down,
every occurrence of the token's pair of codes is replaced left to right.  So
the encoded form of a name can be computed from the token table alone and
found with ``bytes.find`` in ``kallsyms_names``; the entry's index (through
``kallsyms_markers``) gives its offset in ``kallsyms_offsets``.

Nothing here is trusted on faith: :func:`kallsyms_lookup` first looks up
symbols whose addresses VMCOREINFO gives and returns None unless enough are
found at the right address and few (values, not addresses) elsewhere: the
replay, the table layout and the address scheme are all checked that way.
The caller then falls back to drgn's full index.  Pure but for
:func:`read_kallsyms_tables`, which reads the tables through a callback.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = (
    "KallsymsError",
    "KallsymsLookup",
    "KallsymsTables",
    "kallsyms_lookup",
    "read_kallsyms_tables",
)

#: ``read(address, size)``: target memory (virtual).
Read = Callable[[int, int], bytes]

#: Symbols per entry of ``kallsyms_markers``.
MARKER_STRIDE = 256
#: The tables are rejected past these (a big distro kernel has ~250k).
MAX_SYMBOLS = 1 << 21
MAX_NAMES_BYTES = 64 << 20
#: Type letters tried for a name whose type is not known, likeliest first.
TYPE_LETTERS = b"bBdDrRtTvVwWaAgGsSuUnN"
#: VMCOREINFO symbols that must be found at their address before any answer
#: is trusted.
MIN_CALIBRATION = 3
#: A learned token splits at most this many ways into known tokens, and a
#: name has at most this many candidate encodings; past either the tables are
#: not what scripts/kallsyms.c writes (damaged), and are not used.
MAX_PAIRS = 8
MAX_ENCODINGS = 64
#: VMCOREINFO symbols that are plain kernel variables in every release.
CALIBRATION_FIRST = ("_stext", "init_uts_ns", "prb", "clear_seq", "init_top_pgt")


class KallsymsError(Exception):
    """The tables do not read as scripts/kallsyms.c writes them (damaged):
    the caller uses drgn's index instead."""


@dataclass(eq=False)
class KallsymsTables:
    """The tables as read from the target (addresses from VMCOREINFO)."""

    num_syms: int
    #: ``kallsyms_names`` up to the next table: one entry per symbol, a
    #: length (1 or 2 bytes) then that many token codes.
    names: bytes
    #: The 256 tokens' expansions (``kallsyms_token_table`` by
    #: ``kallsyms_token_index``).
    tokens: list[bytes]
    offsets_addr: int
    #: ``kallsyms_offsets``: one 32-bit word per symbol.
    offsets: bytes
    byteorder: str = "little"
    #: ``kallsyms_markers`` when found and consistent: the offset in
    #: ``names`` of every 256th entry.
    markers: tuple[int, ...] | None = None
    #: ``kallsyms_relative_base``'s value, on kernels that have it.
    relative_base: int | None = None


def read_kallsyms_tables(
    read: Read, symbols: Mapping[str, int], byteorder: str = "little"
) -> KallsymsTables | None:
    """Read the tables VMCOREINFO names (``symbols``: its ``SYMBOL()``s).

    None when they are not all named, or laid out in a way this reader does
    not know (names before the token table).  Read errors propagate.
    """
    need = (
        "kallsyms_names",
        "kallsyms_num_syms",
        "kallsyms_token_table",
        "kallsyms_token_index",
        "kallsyms_offsets",
    )
    if any(name not in symbols for name in need):
        return None
    names_at, table_at = symbols["kallsyms_names"], symbols["kallsyms_token_table"]
    index_at, offsets_at = symbols["kallsyms_token_index"], symbols["kallsyms_offsets"]
    end = "<" if byteorder == "little" else ">"
    (num_syms,) = struct.unpack(end + "I", read(symbols["kallsyms_num_syms"], 4))
    if (
        not 0 < num_syms <= MAX_SYMBOLS
        or not 0 < table_at - names_at <= MAX_NAMES_BYTES
    ):
        return None
    if not 0 < index_at - table_at <= 1 << 16:
        return None
    index = struct.unpack(end + "256H", read(index_at, 512))
    table = read(table_at, index_at - table_at)
    tokens = []
    for start in index:
        stop = table.find(b"\0", start)
        if stop < 0:
            return None
        tokens.append(table[start:stop])
    relative_base = None
    if "kallsyms_relative_base" in symbols:
        (relative_base,) = struct.unpack(
            end + "Q", read(symbols["kallsyms_relative_base"], 8)
        )
    tables = KallsymsTables(
        num_syms=num_syms,
        names=read(names_at, table_at - names_at),
        tokens=tokens,
        offsets_addr=offsets_at,
        offsets=read(offsets_at, 4 * num_syms),
        byteorder=byteorder,
        relative_base=relative_base,
    )
    tables.markers = _find_markers(tables)
    return tables


def _entry_length(names: bytes, at: int) -> tuple[int, int]:
    """(token count, header bytes) of the entry at ``at``."""
    length = names[at]
    if length & 0x80:
        high = names[at + 1] if at + 1 < len(names) else 0
        return (length & 0x7F) | (high << 7), 2
    return length, 1


def _entry_starts(names: bytes, at: int, count: int) -> Iterator[int]:
    """Where each of ``count`` entries starting at ``at`` starts (fewer when
    the names end first)."""
    for _ in range(count):
        if at >= len(names):
            return
        yield at
        length, header = _entry_length(names, at)
        at += header + length


def _find_markers(tables: KallsymsTables) -> tuple[int, ...] | None:
    """``kallsyms_markers``: just before the token table, after the names.

    Accepted only if its first two marks are where walking the names says.
    """
    count = (tables.num_syms + MARKER_STRIDE - 1) // MARKER_STRIDE
    start = len(tables.names) - 4 * count
    if start <= 0:
        return None
    end = "<" if tables.byteorder == "little" else ">"
    markers = struct.unpack_from(f"{end}{count}I", tables.names, start)
    if markers[0] != 0 or list(markers) != sorted(set(markers)):
        return None
    if markers[-1] >= start:
        return None
    if count > 1:
        starts = list(_entry_starts(tables.names, 0, MARKER_STRIDE + 1))
        if len(starts) <= MARKER_STRIDE or starts[MARKER_STRIDE] != markers[1]:
            return None
    return markers


def learned_pairs(tokens: list[bytes]) -> list[tuple[int, list[tuple[int, int]]]]:
    """Each learned token, in learning order (code 255 down), with the pairs
    of codes it can have replaced.

    A code whose token is its own byte is a literal character; every other
    token was learned as a pair of codes known by then (literals, or codes
    learned before it).  When its expansion splits more than one such way,
    every split is kept and the replay tries each.
    """
    literal = [len(t) == 1 and t[0] == code for code, t in enumerate(tokens)]
    by_text: dict[bytes, list[int]] = {}
    for code, text in enumerate(tokens):
        by_text.setdefault(text, []).append(code)
    order = []
    for code in range(255, -1, -1):
        text = tokens[code]
        if literal[code] or len(text) < 2:
            continue
        pairs = [
            (a, b)
            for k in range(1, len(text))
            for a in by_text.get(text[:k], ())
            if literal[a] or a > code
            for b in by_text.get(text[k:], ())
            if literal[b] or b > code
        ]
        if len(pairs) > MAX_PAIRS:
            raise KallsymsError(f"token {code} splits {len(pairs)} ways")
        order.append((code, pairs))
    return order


def encodings(
    text: bytes, order: list[tuple[int, list[tuple[int, int]]]]
) -> set[tuple[int, ...]]:
    """Every way scripts/kallsyms.c may have encoded ``text`` (usually one)."""
    seqs = {tuple(text)}
    for code, pairs in order:
        new: set[tuple[int, ...]] = set()
        for seq in seqs:
            replaced = False
            for a, b in pairs:
                if a not in seq or b not in seq:
                    continue
                out = _replace(seq, a, b, code)
                if out is not None:
                    new.add(out)
                    replaced = True
            if not replaced:
                new.add(seq)
        if len(new) > MAX_ENCODINGS:
            raise KallsymsError(f"{text!r} has more than {MAX_ENCODINGS} encodings")
        seqs = new
    return seqs


def _replace(seq: tuple[int, ...], a: int, b: int, code: int) -> tuple[int, ...] | None:
    out: list[int] = []
    i, found = 0, False
    while i < len(seq):
        if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
            out.append(code)
            i += 2
            found = True
        else:
            out.append(seq[i])
            i += 1
    return tuple(out) if found else None


def _entry_bytes(seq: tuple[int, ...]) -> bytes:
    length = len(seq)
    if length < 0x80:
        return bytes([length, *seq])
    return bytes([(length & 0x7F) | 0x80, length >> 7, *seq])


@dataclass(eq=False)
class KallsymsLookup:
    """Name -> address through the tables, one ``find`` per candidate."""

    tables: KallsymsTables
    order: list[tuple[int, list[tuple[int, int]]]]
    #: "pc-relative" (each offset from its own slot, 6.x+), "base-relative"
    #: (from ``kallsyms_relative_base``), set by calibration.
    scheme: str = "pc-relative"
    _entry_starts: list[int] | None = field(default=None, repr=False)
    _indices_found: dict[str, int | None] = field(default_factory=dict, repr=False)

    def address(self, name: str) -> int | None:
        """The address of ``name``; None when it is not in kallsyms.

        :raises KallsymsError: the tables turned out not to be trustworthy.
        """
        if name not in self._indices_found:
            found = next(self._indices(name.encode(), TYPE_LETTERS), None)
            self._indices_found[name] = found
        index = self._indices_found[name]
        return None if index is None else self._address_of(index)

    def _indices(self, name: bytes, types: bytes) -> Iterator[int]:
        names = self.tables.names
        for letter in types:
            for seq in encodings(bytes([letter]) + name, self.order):
                pattern = _entry_bytes(seq)
                at = names.find(pattern)
                while at >= 0:
                    index = self._index_at(at)
                    if index is not None:
                        yield index
                    at = names.find(pattern, at + 1)

    def _index_at(self, at: int) -> int | None:
        """The index of the entry starting exactly at ``at``, if one does."""
        names, markers = self.tables.names, self.tables.markers
        if markers is not None:
            block = bisect.bisect_right(markers, at) - 1
            first = block * MARKER_STRIDE
            count = min(MARKER_STRIDE, self.tables.num_syms - first)
            for offset, start in enumerate(_entry_starts(names, markers[block], count)):
                if start >= at:
                    return first + offset if start == at else None
            return None
        if self._entry_starts is None:
            self._entry_starts = list(_entry_starts(names, 0, self.tables.num_syms))
        found = bisect.bisect_right(self._entry_starts, at) - 1
        return found if found >= 0 and self._entry_starts[found] == at else None

    def _address_of(self, index: int) -> int:
        t = self.tables
        end = "<" if t.byteorder == "little" else ">"
        if self.scheme == "base-relative" and t.relative_base is not None:
            (offset,) = struct.unpack_from(end + "I", t.offsets, 4 * index)
            return int(t.relative_base + offset) & (1 << 64) - 1
        (offset,) = struct.unpack_from(end + "i", t.offsets, 4 * index)
        return int(t.offsets_addr + 4 * index + offset) & (1 << 64) - 1


def kallsyms_lookup(
    tables: KallsymsTables, known: Mapping[str, int]
) -> KallsymsLookup | None:
    """A lookup whose answers were checked on ``known`` (VMCOREINFO's own
    ``SYMBOL()`` addresses), or None if they do not all agree."""
    try:
        lookup = KallsymsLookup(tables, learned_pairs(tables.tokens))
        return _calibrated(lookup, tables, known)
    except KallsymsError:
        return None


def _calibrated(
    lookup: KallsymsLookup, tables: KallsymsTables, known: Mapping[str, int]
) -> KallsymsLookup | None:
    """The lookup with the address scheme VMCOREINFO's addresses bear out."""
    schemes = ["pc-relative"] + (["base-relative"] if tables.relative_base else [])
    # Plain variables first; a few SYMBOL()s are values, not addresses
    # (mem_section is the array's pointer), or aliases kallsyms lacks.
    checks = sorted(
        (n for n in known if not n.startswith("kallsyms_")),
        key=lambda n: (n not in CALIBRATION_FIRST, n),
    )
    for scheme in schemes:
        lookup.scheme = scheme
        right = wrong = 0
        for name in checks:
            address = lookup.address(name)
            if address is None:
                continue
            if address == known[name]:
                right += 1
            elif name in CALIBRATION_FIRST:
                wrong = right + 1  # a plain variable elsewhere: not to be trusted
                break
            else:
                wrong += 1
            if right >= MIN_CALIBRATION or wrong > 1:
                break
        if right >= MIN_CALIBRATION and wrong <= right // 3:
            return lookup
    return None
