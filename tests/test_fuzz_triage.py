"""Property-based tests (hypothesis) for kho-triage's discovery.

Random trees of regular files (random headers, ELF/kdump/flattened magics
and their prefixes), FIFOs, symbolic links (dangling, loops, to /dev/zero,
to FIFOs, to directories) and permission bits, read as an unprivileged user
(user 65534 in a forked child when the tests run as root). Invariants:

* discovery and debuginfo indexing terminate within a deadline (the child
  is killed and the example fails past it) and never raise;
* nothing but regular files and directories is ever opened;
* every path in the tree is discovered (a dump), reported (skipped, itself
  or a directory above it), a directory, or a readable regular file that is
  not a dump by name or header;
* ELF headers with hostile fields never raise and reads stay bounded.

Each property runs twice, as in ``test_fuzz.py``: ``test_<name>`` is the
fast derandomized slice of the default run (``KHO_DRGN_FAST_EXAMPLES``,
default 25) and ``test_<name>_fuzz`` is marked ``fuzz``
(``KHO_DRGN_TRIAGE_FUZZ_EXAMPLES`` examples each, default 2000).
"""

from __future__ import annotations

import builtins
import faulthandler
import io
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hostilefs import elf_header, open_tmp_dir, run_unprivileged, section_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kho_drgn.triage.discover import (
    DUMP_NAMES,
    ELF_MAGIC,
    FLAT_MAGIC,
    KDUMP_MAGICS,
    MAX_HEADER_TABLE,
    MAX_NOTE_BYTES,
    SHT_NOTE,
    Skipped,
    discover,
    dump_kind,
    elf_build_id,
    elf_core_problem,
    index_debuginfo,
)

FAST_EXAMPLES = int(os.environ.get("KHO_DRGN_FAST_EXAMPLES", "25"))
FUZZ_EXAMPLES = int(os.environ.get("KHO_DRGN_TRIAGE_FUZZ_EXAMPLES", "2000"))
#: Discovery's own deadline in each example, and the child's hard limit.
DISCOVERY_DEADLINE = 10.0
CHILD_TIMEOUT = 60.0
#: No hypothesis deadline (a loaded machine made a slow example flaky):
#: the hang guards are the child's hard limit and, in this process, a
#: faulthandler watchdog that dumps the stacks and ends the run.
HANG_SECONDS = 60

# --------------------------------------------------------------------------
# Random trees
# --------------------------------------------------------------------------

NAMES = st.sampled_from(
    ["vmcore", "vmcore-1", "dump.2", "core", "a", "b", "vmlinux", "x.txt",
     "vmcore-dmesg.txt", "e\x1b[2Jv", "n\nl"]
)  # fmt: skip
ELF_CORE = elf_header(e_type=4)
MAGICS = [ELF_CORE, elf_header(e_type=2), *KDUMP_MAGICS, FLAT_MAGIC, ELF_MAGIC]
HEADERS = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.sampled_from(MAGICS), st.integers(0, 64), st.binary(max_size=32)).map(
        lambda t: t[0][: t[1]] + t[2]
    ),
)
LINK_TARGETS = st.sampled_from(
    ["nowhere", "<self>", "/dev/zero", "/dev/null", ".", "..", "<sibling>"]
)
FILE_MODES = st.sampled_from([0o644, 0o600, 0o000, 0o444])
DIR_MODES = st.sampled_from([0o755, 0o700, 0o500, 0o100, 0o400, 0o000])


@dataclass(frozen=True)
class Entry:
    parents: tuple[str, ...]
    name: str
    kind: str  # file, fifo, symlink, dir
    header: bytes = b""
    target: str = ""
    mode: int = 0o644


ENTRY = st.builds(
    Entry,
    parents=st.lists(NAMES, max_size=2).map(tuple),
    name=NAMES,
    kind=st.sampled_from(["file", "file", "fifo", "symlink", "dir"]),
    header=HEADERS,
    target=LINK_TARGETS,
    mode=st.one_of(FILE_MODES, DIR_MODES),
)
TREES = st.lists(ENTRY, max_size=14)


def build_tree(root: Path, entries: list[Entry]) -> list[Path]:
    """Create the entries under ``root`` (the first one at a name wins);
    every path created, modes set last so that creation succeeds."""
    created: list[Path] = []
    modes: list[tuple[Path, int]] = []
    for entry in entries:
        parent = root.joinpath(*entry.parents)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # a file already sits on the way
            continue
        for p in [parent, *parent.parents]:
            if p == root:
                break
            if p not in created:
                created.append(p)
        path = parent / entry.name
        if os.path.lexists(path):
            continue
        if entry.kind == "file":
            path.write_bytes(entry.header)
            modes.append((path, entry.mode & 0o777))
        elif entry.kind == "fifo":
            os.mkfifo(path)
        elif entry.kind == "dir":
            path.mkdir()
            modes.append((path, entry.mode & 0o777))
        else:
            os.symlink(_link_target(root, parent, path, entry.target), path)
        created.append(path)
    for path, mode in reversed(modes):
        path.chmod(mode)
    return created


def _link_target(root: Path, parent: Path, path: Path, target: str) -> str:
    if target == "<self>":
        return path.name  # a loop
    if target == ".." and parent == root:
        return "."  # never out of the tree
    if target == "<sibling>":
        siblings = sorted(p for p in os.listdir(parent) if p != path.name)
        return siblings[0] if siblings else "nowhere"
    return target


# --------------------------------------------------------------------------
# Run as the unprivileged user, watching every open
# --------------------------------------------------------------------------


class OpenWatch:
    """Records every file this process opens that is neither a regular file
    nor a directory (checked on the descriptor, after the open)."""

    def __init__(self) -> None:
        self.bad: list[str] = []
        self._os_open = os.open
        self._open = builtins.open

    def __enter__(self) -> OpenWatch:
        watch = self

        def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            fd = watch._os_open(path, flags, *args, **kwargs)
            watch.check(path, fd)
            return fd

        def open_(file: Any, *args: Any, **kwargs: Any) -> Any:
            f = watch._open(file, *args, **kwargs)
            watch.check(file, f.fileno())
            return f

        os.open = os_open  # type: ignore[assignment]
        builtins.open = io.open = open_  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        os.open = self._os_open
        builtins.open = io.open = self._open

    def check(self, path: Any, fd: int) -> None:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            self.bad.append(f"{path!r}: mode {mode:o}")


def _is_dump_like(path: Path) -> bool:
    """Independent of the walker: a name or header that makes a dump."""
    name = path.name
    if name.startswith(DUMP_NAMES) and not name.endswith((".txt", ".log")):
        return True
    with open(path, "rb") as f:  # a regular file, checked by the caller
        head = f.read(18)
    if head.startswith(ELF_MAGIC):
        if len(head) < 18 or head[5] not in (1, 2):
            return False
        # e_type is two bytes in the file's byte order; only ET_CORE (4) is a dump.
        return int.from_bytes(head[16:18], "little" if head[5] == 1 else "big") == 4
    return head.startswith((*KDUMP_MAGICS, FLAT_MAGIC))


def _entry(path: Path) -> str:
    """A directory entry by its directory's real path: the tree reaches one
    entry by several paths when a link leads to a directory."""
    return os.path.join(os.path.realpath(path.parent), path.name)


def check_coverage(
    root: Path,
    created: list[Path],
    skipped: list[Skipped],
    identities: set[tuple[int, int]],
    dump_like_must_be_found: bool,
) -> None:
    """Every created path is accounted for (see the module docstring)."""
    reported = {_entry(s.path) for s in skipped}
    for s in skipped:
        assert isinstance(s.reason, str) and s.reason, s
    for path in created:
        chain = [path, *path.parents]
        if any(_entry(p) in reported for p in chain[: chain.index(root) + 1]):
            continue
        try:
            st_ = os.stat(path)
        except OSError as e:
            raise AssertionError(f"{path} ({e}) neither found nor reported") from e
        if stat.S_ISDIR(st_.st_mode):
            continue
        where = f"{path} (mode {st_.st_mode:o}) neither found nor reported"
        assert stat.S_ISREG(st_.st_mode), where
        if (st_.st_dev, st_.st_ino) in identities:
            continue
        assert os.access(path, os.R_OK), where
        if dump_like_must_be_found:
            assert not _is_dump_like(path), f"{path}: a dump, not found"


def in_child(fn: Callable[[], None]) -> None:
    def run() -> int:
        fn()
        return 0

    outcome = run_unprivileged(run, CHILD_TIMEOUT)
    assert outcome.status != -1, f"hung: killed after {CHILD_TIMEOUT} s"
    assert outcome.status == 0, outcome.stderr


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Property:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]


PROPERTIES: list[Property] = []


def prop(
    name: str, strategy: st.SearchStrategy[Any]
) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    def register(check: Callable[[Any], None]) -> Callable[[Any], None]:
        PROPERTIES.append(Property(name, strategy, check))
        return check

    return register


@prop("discovery_random_tree", st.tuples(TREES, st.booleans()))
def discovery_random_tree(value: tuple[list[Entry], bool]) -> None:
    entries, expired = value
    with open_tmp_dir() as root:
        created = build_tree(root, entries)

        def walk() -> None:
            deadline = time.monotonic() + (-1 if expired else DISCOVERY_DEADLINE)
            with OpenWatch() as watch:
                start = time.monotonic()
                found = discover([str(root)], deadline)
                elapsed = time.monotonic() - start
            assert elapsed < DISCOVERY_DEADLINE + 1, elapsed
            assert watch.bad == [], watch.bad
            identities = set()
            for dump in found.dumps:
                st_ = os.stat(dump)
                assert stat.S_ISREG(st_.st_mode), dump
                identities.add((st_.st_dev, st_.st_ino))
            real = {os.path.realpath(d) for d in found.dumps}
            assert len(real) == len(found.dumps)  # each dump once
            if expired:
                assert found.dumps == [] and str(found.skipped[0].path) == str(root)
            check_coverage(root, created, found.skipped, identities, True)

        in_child(walk)


@prop("debuginfo_random_tree", TREES)
def debuginfo_random_tree(entries: list[Entry]) -> None:
    with open_tmp_dir() as root:
        created = build_tree(root, entries)

        def index() -> None:
            with OpenWatch() as watch:
                found = index_debuginfo([root], time.monotonic() + DISCOVERY_DEADLINE)
            assert watch.bad == [], watch.bad
            for path in found.by_build_id.values():
                assert stat.S_ISREG(os.stat(path).st_mode)
            check_coverage(root, created, found.skipped, found.inputs, False)

        in_child(index)


#: Header fields: small, boundary and huge values.
FIELD = st.one_of(
    st.integers(0, 4096),
    st.sampled_from([0xFFFF, 0xFF00, 2**31, 2**32 - 1, 2**63, 2**64 - 1]),
)
HALF = st.one_of(st.integers(0, 80), st.sampled_from([0, 0xFFFF]))


@st.composite
def hostile_elf(draw: st.DrawFn) -> tuple[bytes, int]:
    """An ELF64 header with hostile table fields, section headers that may
    claim huge notes, random bytes, and a (sparse) size up to 8 GiB."""
    head = elf_header(
        e_type=draw(st.sampled_from([2, 4, 1, 0xFFFF])),
        phoff=draw(FIELD) % 2**64,
        phnum=draw(HALF),
        phentsize=draw(HALF),
        shoff=draw(FIELD) % 2**64,
        shnum=draw(HALF),
        shentsize=draw(HALF),
    )
    tables = b"".join(
        section_header(SHT_NOTE, draw(FIELD) % 2**64, draw(FIELD) % 2**64)
        for _ in range(draw(st.integers(0, 4)))
    )
    body = head + tables + draw(st.binary(max_size=512))
    size = draw(st.sampled_from([len(body), 4096, 1 << 20, 8 << 30]))
    return body, max(size, len(body))


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("rchar:"))


@prop("elf_header_hostile", hostile_elf())
def elf_header_hostile(value: tuple[bytes, int]) -> None:
    body, size = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file"
        with open(path, "wb") as f:
            f.write(body)
            f.truncate(size)
        before = _bytes_read()
        build_id = elf_build_id(path)
        problem = elf_core_problem(path)
        kind = dump_kind(path)
        read = _bytes_read() - before
    assert build_id is None or (isinstance(build_id, str) and build_id)
    assert problem is None or problem.startswith(
        ("truncated ELF core: ", "malformed ELF core: ")
    )
    assert kind in (None, "elf")
    assert read < 2 * MAX_HEADER_TABLE + MAX_NOTE_BYTES + (1 << 20), read


def test_coverage_check_can_fail(tmp_path: Path) -> None:
    """The coverage check itself: an unreported FIFO or missed dump fails."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "vmcore").write_bytes(b"x")
    with pytest.raises(AssertionError, match="neither found nor reported"):
        check_coverage(tmp_path, [tmp_path / "fifo"], [], set(), True)
    with pytest.raises(AssertionError, match="a dump, not found"):
        check_coverage(tmp_path, [tmp_path / "vmcore"], [], set(), True)
    with OpenWatch() as watch, open(tmp_path / "fifo", "rb", opener=_nonblock):
        pass
    assert watch.bad and "fifo" in watch.bad[0]


def _nonblock(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


# --------------------------------------------------------------------------
# Test generation: a fast slice for the default run, the fuzz job behind -m fuzz
# --------------------------------------------------------------------------


def _settings(examples: int, fast: bool) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=fast,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=not fast,
    )


def _body(p: Property) -> Callable[[Any], None]:
    def body(value: Any) -> None:
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
        try:
            p.check(value)
        finally:
            faulthandler.cancel_dump_traceback_later()

    body.__qualname__ = body.__name__ = p.name
    return body


def _make_tests() -> None:
    for p in PROPERTIES:
        fast = _settings(FAST_EXAMPLES, True)(given(p.strategy)(_body(p)))
        fast.__name__ = fast.__qualname__ = f"test_{p.name}"
        fuzz = _settings(FUZZ_EXAMPLES, False)(given(p.strategy)(_body(p)))
        fuzz = pytest.mark.fuzz(fuzz)
        fuzz.__name__ = fuzz.__qualname__ = f"test_{p.name}_fuzz"
        globals()[fast.__name__] = fast
        globals()[fuzz.__name__] = fuzz


_make_tests()
