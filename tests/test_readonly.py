"""kho-drgn only reads its target: checked statically and at run time.

* drgn 0.3.0 has no API that writes target memory: every public attribute of
  ``drgn.Program`` and ``drgn.Object`` is classified below, so a drgn upgrade
  that adds one fails here and has to be reviewed.
* An AST scan of ``kho_drgn/``: the program is only used through read APIs
  (plus drgn's own session state: its cache and a symbol finder), no Program
  is re-pointed (set_core_dump & co.), no file is opened for writing, nothing
  is written, deleted or created through os/shutil/pathlib, no subprocess,
  ctypes, mmap or ioctl -- so nothing can reach debugfs or /dev/mem either.
* At run time: the full report (DWARF and kallsyms paths, JSON and text) is
  made through a recording proxy of a Program opened on a real dump; every
  call it sees is a read.  drgn holds the dump open ``O_RDONLY`` and the file
  is unchanged afterwards.
"""

from __future__ import annotations

import ast
import importlib
import io
import os
import pkgutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import drgn
import pytest
from fixturedata import fixture_files, load_truth

import kho_drgn

PACKAGE = Path(kho_drgn.__file__).resolve().parent

#: Program attributes that only read the target (or describe the session).
PROGRAM_READS = {
    "address_size",
    "array_type",
    "bool_type",
    "class_type",
    "config",
    "constant",
    "core_dump_path",
    "crashed_thread",
    "debug_info_options",
    "enabled_debug_info_finders",
    "enabled_object_finders",
    "enabled_symbol_finders",
    "enabled_type_finders",
    "enum_type",
    "float_type",
    "flags",
    "function",
    "function_type",
    "int_type",
    "language",
    "loaded_modules",
    "main_module",
    "main_thread",
    "module",
    "modules",
    "object",
    "platform",
    "pointer_type",
    "read",
    "read_c_string",
    "read_u16",
    "read_u32",
    "read_u64",
    "read_u8",
    "read_word",
    "registered_debug_info_finders",
    "registered_object_finders",
    "registered_symbol_finders",
    "registered_type_finders",
    "search_memory",
    "search_memory_regex",
    "search_memory_u16",
    "search_memory_u32",
    "search_memory_u64",
    "search_memory_word",
    "source_location",
    "stack_trace",
    "stack_trace_from_pcs",
    "struct_type",
    "symbol",
    "symbols",
    "thread",
    "threads",
    "type",
    "typedef_type",
    "union_type",
    "variable",
    "void_type",
    "__getitem__",
    "__contains__",
}
#: Program attributes that change drgn's own session (what it knows about the
#: target), never the target: kho-drgn may use the first set.
PROGRAM_SESSION_USED = {"cache", "register_symbol_finder"}
PROGRAM_SESSION_OTHER = {
    "_log",
    "add_memory_segment",
    "add_object_finder",
    "add_type_finder",
    "create_loaded_modules",
    "extra_module",
    "find_standard_debug_info",
    "linux_kernel_loadable_module",
    "load_debug_info",
    "load_default_debug_info",
    "load_module_debug_info",
    "register_debug_info_finder",
    "register_object_finder",
    "register_type_finder",
    "relocatable_module",
    "set_enabled_debug_info_finders",
    "set_enabled_object_finders",
    "set_enabled_symbol_finders",
    "set_enabled_type_finders",
    "shared_library_module",
    "vdso_module",
}
#: What points a Program at a target: the caller's business, never ours.
PROGRAM_TARGET_SETUP = {
    "set_core_dump",
    "set_kernel",
    "set_linux_kernel_custom",
    "set_pid",
    "set_qemu_qmp",
}
WRITE_WORDS = ("write", "poke", "store", "memset", "memcpy", "patch", "inject")


def _public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("__")}


def test_drgn_has_no_write_api() -> None:
    """Every Program attribute is a read, session state or target setup; no
    Program/Object attribute or drgn function is named like a write."""
    known = PROGRAM_READS | PROGRAM_SESSION_USED | PROGRAM_SESSION_OTHER
    unknown = _public(drgn.Program) - known - PROGRAM_TARGET_SETUP
    assert not unknown, f"new drgn Program API, classify it: {sorted(unknown)}"
    for owner, names in (
        ("Program", _public(drgn.Program)),
        ("Object", _public(drgn.Object)),
        ("drgn", set(dir(drgn))),
    ):
        writes = {n for n in names if any(w in n.lower() for w in WRITE_WORDS)}
        assert not writes, f"drgn.{owner} has write-like API: {writes}"


# --------------------------------------------------------------------------
# Static: an AST scan of the package
# --------------------------------------------------------------------------


#: kho_drgn/triage is a caller, not a reader: it points Programs at dumps,
#: loads vmlinux files and writes its own JSON Lines output (never to a
#: target). It is checked on its own in test_triage_only_sets_up_programs.
TRIAGE = PACKAGE / "triage"


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if TRIAGE not in path.parents:
            yield path, ast.parse(path.read_text(), str(path))


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


FORBIDDEN_MODULES = {"ctypes", "mmap", "subprocess", "fcntl", "shutil", "tempfile"}
FORBIDDEN_CALLS = {
    "os.write",
    "os.pwrite",
    "os.writev",
    "os.truncate",
    "os.ftruncate",
    "os.remove",
    "os.unlink",
    "os.rename",
    "os.replace",
    "os.mkdir",
    "os.makedirs",
    "os.rmdir",
    "os.system",
    "os.popen",
    "os.symlink",
    "os.link",
    "os.chmod",
    "os.chown",
    "os.mknod",
    "os.mkfifo",
}
FORBIDDEN_METHODS = {
    "write_text",
    "write_bytes",
    "touch",
    "unlink",
    "mkdir",
    "rmdir",
    "symlink_to",
    "hardlink_to",
    "chmod",
    "truncate",
    "writelines",
}
#: ``.write(...)`` is only for the report on these streams.
WRITE_STREAMS = {"out", "err", "sys.stdout", "sys.stderr", "stdout", "stderr"}
OS_OPEN_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC")


def _open_mode(call: ast.Call, position: int) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == "mode":
            return kw.value
    return call.args[position] if len(call.args) > position else None


def scan_for_writes() -> list[str]:
    """Every place in kho_drgn that could write somewhere, as messages."""
    problems = []
    for path, tree in _sources():
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            at = f"{where}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names]
                module = node.module if isinstance(node, ast.ImportFrom) else None
                for name in [module or "", *names]:
                    if name.split(".")[0] in FORBIDDEN_MODULES:
                        problems.append(f"{at}: imports {name}")
            if not isinstance(node, ast.Call):
                continue
            func = _dotted(node.func)
            attr = node.func.attr if isinstance(node.func, ast.Attribute) else None
            if func in FORBIDDEN_CALLS:
                problems.append(f"{at}: calls {func}")
            if attr in FORBIDDEN_METHODS:
                problems.append(f"{at}: calls .{attr}()")
            if attr in PROGRAM_TARGET_SETUP or attr in PROGRAM_SESSION_OTHER:
                problems.append(f"{at}: re-points or reloads a Program: .{attr}()")
            if attr == "write" and isinstance(node.func, ast.Attribute):
                stream = _dotted(node.func.value)
                if stream not in WRITE_STREAMS:
                    problems.append(f"{at}: writes to {stream}")
            if func in ("open", "io.open") or (attr == "open" and func != "os.open"):
                mode = _open_mode(node, 1 if func in ("open", "io.open") else 0)
                if mode is None:
                    continue  # default "r"
                if not isinstance(mode, ast.Constant) or not isinstance(
                    mode.value, str
                ):
                    problems.append(f"{at}: open() with a non-literal mode")
                elif set(mode.value) & set("wax+"):
                    problems.append(f"{at}: open(..., {mode.value!r})")
            if func == "os.open":
                flags = ast.unparse(node)
                if any(flag in flags for flag in OS_OPEN_WRITE_FLAGS):
                    problems.append(f"{at}: os.open for writing")
    return problems


def test_scan_finds_writes() -> None:
    """The scanner itself catches what it must (on a planted sample)."""
    sample = (
        "import subprocess\n"
        "open('/sys/kernel/debug/kho/out/finalize', 'w').write('1')\n"
        "open(p, mode='r+b')\n"
        "os.write(fd, b'1')\n"
        "Path(p).write_text('x')\n"
        "prog.set_core_dump(x)\n"
        "os.open(p, os.O_RDWR)\n"
        "f.write(b'x')\n"
        "open(p, m)\n"
    )
    tree = ast.parse(sample)
    original = _sources
    try:
        globals()["_sources"] = lambda: iter([(PACKAGE / "planted.py", tree)])
        problems = scan_for_writes()
    finally:
        globals()["_sources"] = original
    flagged = {int(p.split(":")[1]) for p in problems}
    assert flagged == set(range(1, sample.count("\n") + 1)), problems


def test_package_never_writes() -> None:
    assert scan_for_writes() == []


def test_package_uses_only_read_program_api() -> None:
    """``prog.<attr>`` in kho_drgn: reads and drgn session state only."""
    allowed = PROGRAM_READS | PROGRAM_SESSION_USED
    used: dict[str, list[str]] = {}
    for path, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "prog"
            ):
                used.setdefault(node.attr, []).append(f"{path.name}:{node.lineno}")
    assert set(used) <= allowed, {a: used[a] for a in set(used) - allowed}
    assert "read" in used  # the scan sees the package's reads


def test_triage_only_sets_up_programs() -> None:
    """The batch tool only opens dumps and loads debug info on its Programs;
    the reading is the library's, scanned above."""
    used = set()
    for path in sorted(TRIAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "prog"
            ):
                used.add(node.attr)
    assert used <= PROGRAM_READS | PROGRAM_TARGET_SETUP | {"load_debug_info"}, used


# --------------------------------------------------------------------------
# Run time: a recording proxy around a real Program on a real dump
# --------------------------------------------------------------------------


class RecordingProgram:
    """Forwards to a real Program and records every attribute used."""

    def __init__(self, prog: drgn.Program) -> None:
        object.__setattr__(self, "_prog", prog)
        object.__setattr__(self, "calls", [])

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self._prog, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self.calls.append(f"set:{name}")
        setattr(self._prog, name, value)

    def __getitem__(self, name: str) -> drgn.Object:
        self.calls.append("__getitem__")
        return self._prog[name]

    def __contains__(self, name: str) -> bool:
        self.calls.append("__contains__")
        return name in self._prog


def _unwrap(value: Any) -> Any:
    return value._prog if isinstance(value, RecordingProgram) else value


def _drgn_helpers_used() -> set[tuple[str, str]]:
    """(module, name) of every drgn helper kho_drgn imports."""
    found = set()
    for _, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "drgn.helpers"
            ):
                found |= {(node.module or "", a.name) for a in node.names}
    return found


@pytest.fixture
def helpers_unwrap(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """drgn's helpers need the real Program: hand it to them, and record
    which helper was called (they only read: drgn has no write API)."""
    called: list[str] = []

    def wrap(name: str, helper: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            called.append(name)
            return helper(*[_unwrap(a) for a in args], **kwargs)

        return call

    for module_name, name in _drgn_helpers_used():
        module = importlib.import_module(module_name)
        original = getattr(module, name)
        wrapped = wrap(name, original)
        monkeypatch.setattr(module, name, wrapped)
        for info in pkgutil.iter_modules(kho_drgn.__path__):
            ours = importlib.import_module(f"kho_drgn.{info.name}")
            if getattr(ours, name, None) is original:
                monkeypatch.setattr(ours, name, wrapped)
    return called


def _fd_access_modes(path: Path) -> list[int]:
    """O_ACCMODE of every descriptor this process has open on ``path``."""
    modes = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if target == str(path.resolve()):
            flags = next(
                int(line.split()[1], 8)
                for line in info.splitlines()
                if line.startswith("flags:")
            )
            modes.append(flags & os.O_ACCMODE)
    return modes


@pytest.mark.fixtures
@pytest.mark.parametrize("dwarf", [True, False], ids=["dwarf", "no-debuginfo"])
def test_report_makes_only_read_calls(dwarf: bool, helpers_unwrap: list[str]) -> None:
    from kho_drgn.cli import run

    vmcore, vmlinux = fixture_files(load_truth("chain-aab"))
    before = vmcore.stat()
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    if dwarf:
        prog.load_debug_info([str(vmlinux)])
    # drgn keeps the dump open read-only: it could not write it if it tried.
    modes = _fd_access_modes(vmcore)
    assert modes and set(modes) == {os.O_RDONLY}

    proxy = RecordingProgram(prog)
    for args in (["--json"], []):
        out, err = io.StringIO(), io.StringIO()
        assert run(proxy, args, stdout=out, stderr=err) == 0, err.getvalue()
        assert out.getvalue().strip()
    calls = set(proxy.calls)
    assert calls <= PROGRAM_READS | PROGRAM_SESSION_USED, calls - PROGRAM_READS
    assert "read" in calls or "read_word" in calls
    assert not calls & (PROGRAM_TARGET_SETUP | PROGRAM_SESSION_OTHER)
    after = vmcore.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    if dwarf:
        assert "get_printk_records" in helpers_unwrap
