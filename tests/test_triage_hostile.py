"""kho-triage run on hostile trees and arguments: it never writes over an
input, never hangs on a FIFO or device, reports every path it could not
read, and refuses bad arguments with exit 2 before any work.

Every subprocess has a timeout, so a regression to a hang fails the test.
Unreadable paths are read as user 65534 when the tests run as root (root
ignores permission bits): see ``hostilefs.run_unprivileged``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixturedata import fixture_files, load_truth
from hostilefs import (
    build_id_note,
    elf_header,
    open_tmp_dir,
    program_header,
    run_unprivileged,
    section_header,
)

from kho_drgn.triage import cli
from kho_drgn.triage.discover import (
    MAX_HEADER_TABLE,
    MAX_NOTE_BYTES,
    PT_NOTE,
    SHT_NOTE,
    TIMED_OUT,
    discover,
    dump_kind,
    elf_build_id,
    elf_core_problem,
    index_debuginfo,
)

#: A run on these small trees takes a second or two; a hang takes forever.
GUARD = 120


def triage(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kho_drgn.triage.cli", *map(str, args)],
        capture_output=True, text=True, timeout=GUARD,
    )  # fmt: skip


def records(text: str) -> dict[str, dict[str, Any]]:
    return {r["dump"]: r for r in map(json.loads, text.splitlines())}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def core_bytes(size: int = 4096) -> bytes:
    """A small ELF core: header, one PT_NOTE inside the file, zeros."""
    head = elf_header(phoff=64, phnum=1) + program_header(PT_NOTE, 256, 64)
    return head + bytes(size - len(head))


@pytest.fixture
def tree() -> Iterator[Path]:
    with open_tmp_dir() as path:
        yield path


# --------------------------------------------------------------------------
# FIFOs, sockets, devices: never opened, reported
# --------------------------------------------------------------------------


def test_fifos_in_the_tree_and_debuginfo_dir_are_skipped_not_opened(
    tree: Path,
) -> None:
    crash, debug = tree / "crash", tree / "debuginfo"
    (crash / "host-a").mkdir(parents=True)
    debug.mkdir()
    os.mkfifo(crash / "host-a" / "vmcore")  # named like a dump
    os.mkfifo(crash / "pipe")
    os.symlink("pipe", crash / "vmcore.link")
    os.symlink("/dev/zero", crash / "host-a" / "dump.zero")
    os.symlink("nowhere", crash / "dangling")
    os.symlink("loop", crash / "loop")
    os.symlink("..", crash / "host-a" / "up")  # a directory loop
    (crash / "host-a" / "random").write_bytes(b"not a dump at all")
    (crash / "host-b").mkdir()
    (crash / "host-b" / "vmcore").write_bytes(os.urandom(4096))
    os.mkfifo(debug / "vmlinux-fifo")
    os.symlink("/dev/zero", debug / "vmlinux-zero")
    start = time.monotonic()
    proc = triage(crash, "--debuginfo-dir", debug, "-o", tree / "out.jsonl")
    assert time.monotonic() - start < GUARD
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    got = records((tree / "out.jsonl").read_text())
    expect = {
        "host-a/vmcore": "not a regular file (FIFO)",
        "pipe": "not a regular file (FIFO)",
        "vmcore.link": "not a regular file (FIFO)",
        "host-a/dump.zero": "not a regular file (character device)",
        "dangling": "broken link: No such file or directory",
        "loop": "broken link: Too many levels of symbolic links",
    }
    for name, why in expect.items():
        record = got[str(crash / name)]
        assert (record["status"], record["error"]) == ("skipped", why)
        assert f"skipped {crash / name}: {why}" in proc.stderr
    assert got[str(crash / "host-b" / "vmcore")]["status"] == "failed"
    assert "not a vmcore" in got[str(crash / "host-b" / "vmcore")]["error"]
    assert set(got) == {str(crash / n) for n in [*expect, "host-b/vmcore"]}
    for name in ("vmlinux-fifo", "vmlinux-zero"):
        assert f"--debuginfo-dir: skipped {debug / name}: not a regular" in (
            proc.stderr
        )


def test_explicit_fifo_and_device_are_skipped(tree: Path) -> None:
    os.mkfifo(tree / "vmcore")
    proc = triage(tree / "vmcore", "/dev/zero")
    assert proc.returncode == 1
    got = records(proc.stdout)
    assert got[str(tree / "vmcore")]["error"] == "not a regular file (FIFO)"
    assert got["/dev/zero"]["error"] == "not a regular file (character device)"
    assert dump_kind(tree / "vmcore") is None  # refused, not waited on


@pytest.mark.fixtures
def test_fifo_tree_with_real_dump_still_matches_vmlinux(tree: Path) -> None:
    vmcore, vmlinux = fixture_files(load_truth("cold-b"))
    crash, debug = tree / "crash", tree / "debuginfo"
    crash.mkdir()
    debug.mkdir()
    os.symlink(vmcore, crash / "vmcore")
    os.mkfifo(crash / "vmcore-dmesg.fifo")
    os.mkfifo(debug / "aaa-first")
    os.symlink(vmlinux, debug / "vmlinux")
    proc = triage(crash, "--debuginfo-dir", debug)
    assert proc.returncode == 1  # the FIFOs were skipped
    got = records(proc.stdout)
    record = got[str(crash / "vmcore")]
    assert record["status"] == "ok" and record["vmlinux_match"] == "build-id"
    assert record["vmlinux_error"] is None
    assert got[str(crash / "vmcore-dmesg.fifo")]["status"] == "skipped"


# --------------------------------------------------------------------------
# Unreadable directories and files
# --------------------------------------------------------------------------


def _unreadable_tree(tree: Path) -> None:
    (tree / "locked").mkdir()
    (tree / "locked" / "vmcore").write_bytes(core_bytes())
    (tree / "locked").chmod(0o700 if os.geteuid() == 0 else 0o000)
    (tree / "open").mkdir(mode=0o755)
    (tree / "open" / "host1.core").write_bytes(core_bytes())
    (tree / "open" / "host1.core").chmod(0o600 if os.geteuid() == 0 else 0o000)
    (tree / "open" / "notes.txt").write_text("readable, not a dump\n")
    (tree / "open" / "notes.txt").chmod(0o644)


def test_unreadable_directories_and_files_are_reported(tree: Path) -> None:
    _unreadable_tree(tree)
    out = run_unprivileged(lambda: cli.main([str(tree)]))
    assert out.status == 1, out.stderr
    assert "Traceback" not in out.stderr
    got = records(out.stdout)
    assert got[str(tree / "locked")]["status"] == "skipped"
    assert got[str(tree / "locked")]["error"] == (
        "cannot list directory: Permission denied"
    )
    assert got[str(tree / "open" / "host1.core")]["error"] == (
        "cannot read: Permission denied"
    )
    assert set(got) == {str(tree / "locked"), str(tree / "open" / "host1.core")}
    assert f"skipped {tree / 'locked'}: cannot list directory" in out.stderr


def test_permission_errors_on_explicit_paths_are_records(tree: Path) -> None:
    _unreadable_tree(tree)
    explicit = [tree / "locked" / "vmcore", tree / "open" / "host1.core"]
    out = run_unprivileged(lambda: cli.main(list(map(str, explicit))))
    assert out.status == 1 and "Traceback" not in out.stderr, out.stderr
    got = records(out.stdout)
    for path in explicit:
        assert got[str(path)]["status"] == "skipped"
        assert got[str(path)]["error"].endswith("Permission denied")


def test_injected_permission_errors(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same without a second user: the walker's calls fail as they would."""
    (tree / "sub").mkdir()
    (tree / "sub" / "vmcore").write_bytes(core_bytes())
    (tree / "vmcore").write_bytes(core_bytes())
    real_scandir, real_open = os.scandir, os.open

    def scandir(path: Any) -> Any:
        if Path(path) == tree / "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def os_open(path: Any, flags: int, *args: Any) -> int:
        if Path(path) == tree / "vmcore":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "open", os_open)
    found = discover([str(tree)])
    assert found.dumps == []
    assert {(s.path, s.reason) for s in found.skipped} == {
        (tree / "sub", "cannot list directory: Permission denied"),
        (tree / "vmcore", "cannot read: Permission denied"),
    }


def test_unreadable_debuginfo_dir_and_vmlinux_are_usage_errors(tree: Path) -> None:
    (tree / "debug").mkdir()
    (tree / "debug").chmod(0o700 if os.geteuid() == 0 else 0o000)
    (tree / "vmlinux").write_bytes(elf_header(e_type=2))
    (tree / "vmlinux").chmod(0o600 if os.geteuid() == 0 else 0o000)
    (tree / "vmcore").write_bytes(core_bytes())
    (tree / "vmcore").chmod(0o644)
    for option, path in (("--debuginfo-dir", "debug"), ("--vmlinux", "vmlinux")):
        argv = [str(tree / "vmcore"), option, str(tree / path)]
        out = run_unprivileged(lambda argv=argv: cli.main(argv))
        assert out.status == 2, out.stderr
        assert f"{option} {tree / path}: Permission denied" in out.stderr
        assert out.stdout == ""


def test_unreadable_file_in_debuginfo_dir_is_a_warning(tree: Path) -> None:
    (tree / "debug").mkdir(mode=0o755)
    (tree / "debug" / "vmlinux").write_bytes(elf_header(e_type=2))
    (tree / "debug" / "vmlinux").chmod(0o600 if os.geteuid() == 0 else 0o000)
    (tree / "vmcore").write_bytes(b"not a dump")
    (tree / "vmcore").chmod(0o644)
    argv = [str(tree / "vmcore"), "--debuginfo-dir", str(tree / "debug")]
    out = run_unprivileged(lambda: cli.main(argv))
    assert out.status == 1
    assert (
        f"--debuginfo-dir: skipped {tree / 'debug' / 'vmlinux'}: "
        "cannot read: Permission denied"
    ) in out.stderr


# --------------------------------------------------------------------------
# The output never lands on an input, and is never left truncated
# --------------------------------------------------------------------------


def _dump_tree(tree: Path) -> Path:
    (tree / "host").mkdir()
    dump = tree / "host" / "vmcore"
    dump.write_bytes(core_bytes(1 << 16))
    return dump


@pytest.mark.parametrize("how", ["direct", "symlink", "hard link"])
def test_output_aimed_at_a_dump_is_refused(tree: Path, how: str) -> None:
    dump = _dump_tree(tree)
    before = digest(dump)
    target = {"direct": dump, "symlink": tree / "out.jsonl", "hard link": tree / "x"}[
        how
    ]
    if how == "symlink":
        os.symlink(dump, target)
    elif how == "hard link":
        os.link(dump, target)
    proc = triage(tree / "host", "-o", target)
    assert proc.returncode == 2, proc.stderr
    assert "it is never written over" in proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert digest(dump) == before
    assert [p.name for p in tree.rglob("*.kho-triage.tmp")] == []


def test_output_aimed_at_a_directory_entry_read_is_refused(tree: Path) -> None:
    """A vmlinux, a debuginfo file, a skipped dump: none is written over."""
    dump = _dump_tree(tree)
    (tree / "debug").mkdir()
    vmlinux = tree / "debug" / "vmlinux"
    vmlinux.write_bytes(elf_header(e_type=2) + bytes(256))
    (tree / "other").write_bytes(b"kept")
    os.mkfifo(tree / "host" / "vmcore.fifo")
    cases = [
        [str(dump), "--vmlinux", str(vmlinux), "-o", str(vmlinux)],
        [str(dump), "--debuginfo-dir", str(tree / "debug"), "-o", str(vmlinux)],
        [str(tree / "host"), "-o", str(tree / "host" / "vmcore.fifo")],
        [str(tree / "missing.vmcore"), "-o", str(tree / "missing.vmcore")],
        [str(tree / "other"), "-o", str(tree / "other")],
    ]
    for argv in cases:
        proc = triage(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "-o " in proc.stderr and proc.stdout == ""
    assert (tree / "other").read_bytes() == b"kept"
    assert not (tree / "missing.vmcore").exists()


def test_output_that_is_another_dump_is_refused(tree: Path) -> None:
    dump = _dump_tree(tree)
    other = tree / "elsewhere.core"
    other.write_bytes(core_bytes())
    before = digest(other)
    proc = triage(dump, "-o", other)
    assert proc.returncode == 2 and "is a dump" in proc.stderr
    assert digest(other) == before


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("/nonexistent/x", "directory /nonexistent does not exist"),
        ("/proc/version", "cannot create a file in /proc"),
        ("/dev/null", "is a character device, not a regular file"),
        ("DIR", "is a directory, not a regular file"),
    ],
)
def test_bad_output_is_a_usage_error_before_any_work(
    tree: Path, output: str, message: str
) -> None:
    os.mkfifo(tree / "vmcore")  # discovery would report it: it must not run
    output = str(tree) if output == "DIR" else output
    proc = triage(tree, "-o", output)
    assert proc.returncode == 2, proc.stderr
    assert f"kho-triage: -o {output}: {message}" in proc.stderr
    assert "skipped" not in proc.stderr and proc.stdout == ""
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("output", ["/nonexistent/x", "/proc/version", "/dev/null"])
def test_bad_output_is_refused_before_discovery(
    tree: Path, monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    def discover(*args: Any) -> None:
        raise AssertionError("discovery ran")

    monkeypatch.setattr(cli, "discover", discover)
    assert cli.main([str(tree), "-o", output]) == 2


def test_unwritable_output_directory_is_a_usage_error(tree: Path) -> None:
    (tree / "ro").mkdir()
    (tree / "ro").chmod(0o555)
    (tree / "vmcore").write_bytes(b"x")
    (tree / "vmcore").chmod(0o644)
    argv = [str(tree / "vmcore"), "-o", str(tree / "ro" / "out.jsonl")]
    out = run_unprivileged(lambda: cli.main(argv))
    assert out.status == 2, out.stderr
    assert f"cannot create files in {tree / 'ro'}" in out.stderr


def test_output_replaced_only_when_complete(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing file at -o keeps its content while the run goes on and
    when it is interrupted; no temporary file is left behind."""
    dump = _dump_tree(tree)
    out = tree / "records.jsonl"
    out.write_text("previous run\n")
    seen: list[str] = []

    def batch(dumps: list[Path], *args: Any) -> Iterator[dict[str, Any]]:
        yield {"dump": str(dumps[0]), "status": "ok"}
        seen.append(out.read_text())
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_batch", batch)
    assert cli.main([str(dump), "-o", str(out)]) == cli.INTERRUPTED
    assert seen == ["previous run\n"]
    assert out.read_text() == "previous run\n"
    assert sorted(p.name for p in tree.iterdir()) == ["host", "records.jsonl"]

    def complete(dumps: list[Path], *args: Any) -> Iterator[dict[str, Any]]:
        yield {"dump": str(dumps[0]), "status": "ok"}
        seen.append(out.read_text())

    monkeypatch.setattr(cli, "run_batch", complete)
    assert cli.main([str(dump), "-o", str(out)]) == 0
    assert seen[-1] == "previous run\n"
    assert json.loads(out.read_text()) == {"dump": str(dump), "status": "ok"}
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert sorted(p.name for p in tree.iterdir()) == ["host", "records.jsonl"]


def test_output_that_cannot_be_written_is_said_and_removed(
    tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "vmcore").write_bytes(b"not a dump")
    out = tree / "records.jsonl"
    out.write_text("previous run\n")

    def full(self: cli.AtomicOutput) -> None:
        raise OSError(28, "No space left on device", str(self.temp))

    monkeypatch.setattr(cli.AtomicOutput, "commit", full)
    assert cli.main([str(tree / "vmcore"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and f"{out} not written" in err
    assert out.read_text() == "previous run\n"
    assert sorted(p.name for p in tree.iterdir()) == ["records.jsonl", "vmcore"]


def test_output_through_a_symlink_keeps_the_link(tree: Path) -> None:
    (tree / "vmcore").write_bytes(b"not a dump")
    (tree / "records").mkdir()
    os.symlink("records/latest.jsonl", tree / "latest.jsonl")
    proc = triage(tree / "vmcore", "-o", tree / "latest.jsonl")
    assert proc.returncode == 1
    assert (tree / "latest.jsonl").is_symlink()
    assert "not a vmcore" in (tree / "records" / "latest.jsonl").read_text()


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        ["--timeout", "nan"],
        ["--timeout", "inf"],
        ["--timeout", "-1"],
        ["--timeout", "0"],
        ["--timeout", "soon"],
        ["--discovery-timeout", "nan"],
        ["-j", "0"],
        ["-j", "-3"],
    ],
)
def test_bad_numbers_are_usage_errors(tree: Path, bad: list[str]) -> None:
    proc = triage(tree, *bad)
    assert proc.returncode == 2
    assert f"argument {bad[0]}" in proc.stderr or "--jobs" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_missing_vmlinux_and_debuginfo_dir_are_usage_errors(tree: Path) -> None:
    (tree / "vmcore").write_bytes(b"x")
    os.mkfifo(tree / "fifo")
    for option, path, why in [
        ("--vmlinux", "/nonexistent/vmlinux", "No such file or directory"),
        ("--vmlinux", str(tree), "not a regular file (directory)"),
        ("--vmlinux", str(tree / "fifo"), "not a regular file (FIFO)"),
        ("--debuginfo-dir", "/nonexistent", "No such file or directory"),
        ("--debuginfo-dir", str(tree / "vmcore"), "Not a directory"),
    ]:
        proc = triage(tree / "vmcore", option, path)
        assert proc.returncode == 2, (option, path, proc.stderr)
        assert f"kho-triage: {option} {path}: {why}" in proc.stderr
        assert proc.stdout == ""


def test_jobs_capped(tree: Path) -> None:
    for n in range(3):
        (tree / f"vmcore.{n}").write_bytes(b"not a dump")
    proc = triage(tree, "-j", "1000")
    assert proc.returncode == 1
    assert "-j 1000 capped at 3 (at most 4 per CPU, 1 per dump)" in proc.stderr
    assert len(proc.stdout.splitlines()) == 3


# --------------------------------------------------------------------------
# Discovery deadline
# --------------------------------------------------------------------------


def test_discovery_deadline_reports_what_was_not_read(tree: Path) -> None:
    (tree / "a").mkdir()
    (tree / "a" / "vmcore").write_bytes(core_bytes())
    found = discover([str(tree / "a"), str(tree / "b")], time.monotonic() - 1)
    assert found.dumps == []
    assert [(s.path, s.reason) for s in found.skipped] == [
        (tree / "a", TIMED_OUT),
        (tree / "b", TIMED_OUT),
    ]
    index = index_debuginfo([tree / "a"], time.monotonic() - 1)
    assert [(s.path, s.reason) for s in index.skipped] == [(tree / "a", TIMED_OUT)]


def test_discovery_alarm_interrupts_a_blocking_call(
    tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stat that never returns (a dead NFS server) is cut off."""
    (tree / "vmcore").write_bytes(core_bytes())
    real_stat = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(path) == tree / "vmcore":
            time.sleep(GUARD)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    start = time.monotonic()
    status = cli.main([str(tree), "--discovery-timeout", "0.2"])
    assert time.monotonic() - start < GUARD / 2
    assert status == 1
    got = records(capsys.readouterr().out)
    assert got[str(tree)]["error"] == TIMED_OUT


# --------------------------------------------------------------------------
# ELF cores cut short, and debuginfo files whose headers lie
# --------------------------------------------------------------------------


@pytest.mark.fixtures
def test_elf_cut_at_1k_is_a_truncated_core(tree: Path) -> None:
    vmcore, _ = fixture_files(load_truth("chain-aab"))
    with open(vmcore, "rb") as f:
        (tree / "vmcore").write_bytes(f.read(1024))
    proc = triage(tree / "vmcore")
    assert proc.returncode == 1
    record = json.loads(proc.stdout)
    assert record["status"] == "failed"
    assert record["error"].startswith("truncated ELF core: notes at ")
    assert record["error"].endswith("the file has 1024")
    assert record["vmlinux_error"] is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (elf_header()[:40], "truncated ELF core: header cut off at byte 40"),
        (elf_header(phnum=4), "truncated ELF core: program headers: 4 entries"),
        (
            elf_header() + program_header(PT_NOTE, 4096, 100),
            "truncated ELF core: notes at 0x1000 end at byte 4196",
        ),
        (elf_header(phentsize=8) + bytes(64), "malformed ELF core: program headers"),
        (elf_header(phnum=0), "malformed ELF core: no program headers"),
        (core_bytes(), None),
    ],
)
def test_elf_core_problems(tree: Path, data: bytes, problem: str | None) -> None:
    (tree / "core").write_bytes(data)
    found = elf_core_problem(tree / "core")
    assert found == problem or (problem and found and found.startswith(problem))


def _sparse_debuginfo(path: Path, entries: int, good_at: int | None) -> None:
    """5 GiB, nearly all hole: a section table of ``entries`` SHT_NOTE
    entries each claiming 4 GiB, at most one real build-ID note."""
    note = build_id_note(bytes(range(20)))
    table = bytearray()
    for i in range(entries):
        if i == good_at:
            table += section_header(SHT_NOTE, 16 << 20, len(note))
        else:
            table += section_header(SHT_NOTE, 64 << 20, 4 << 30)
    with open(path, "wb") as f:
        f.write(elf_header(e_type=2, phnum=0, shoff=4096, shnum=entries))
        f.seek(4096)
        f.write(table)
        f.seek(16 << 20)
        f.write(note)
        f.truncate(5 << 30)


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("rchar:"))


def test_hostile_debuginfo_header_is_not_trusted(tree: Path) -> None:
    """65535 note sections of 4 GiB each in a 5 GiB sparse file: bounded
    reads, never gigabytes."""
    hostile = tree / "vmlinux-hostile"
    _sparse_debuginfo(hostile, 65535, None)
    before = _bytes_read()
    assert elf_build_id(hostile) is None
    assert _bytes_read() - before < MAX_HEADER_TABLE + MAX_NOTE_BYTES + (1 << 20)
    # an honest note among the first ones is found; past the read budget it
    # is not (the file is hostile), and the reads stay bounded either way
    for good_at, found in ((10, bytes(range(20)).hex()), (40000, None)):
        _sparse_debuginfo(hostile, 65535, good_at)
        before = _bytes_read()
        assert elf_build_id(hostile) == found
        assert _bytes_read() - before < MAX_HEADER_TABLE + MAX_NOTE_BYTES + (1 << 20)
    # a table past the end of the file is not read at all
    with open(hostile, "r+b") as f:
        f.write(elf_header(e_type=2, phnum=0, shoff=(5 << 30) - 64, shnum=65535))
    assert elf_build_id(hostile) is None


def test_hostile_debuginfo_in_a_run(tree: Path) -> None:
    (tree / "debug").mkdir()
    _sparse_debuginfo(tree / "debug" / "vmlinux", 65535, None)
    (tree / "vmcore").write_bytes(b"not a dump")
    proc = triage(tree / "vmcore", "--debuginfo-dir", tree / "debug")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "not a vmcore" in json.loads(proc.stdout)["error"]


def test_links_to_one_dump(tree: Path) -> None:
    """Symbolic links to a dump give one record; hard links are dumps of
    their own name (a pipeline may keep copies that way)."""
    dump = _dump_tree(tree)
    os.symlink(dump, tree / "host" / "vmcore.link")
    os.link(dump, tree / "host" / "vmcore.copy")
    found = discover([str(tree), str(dump)])
    assert found.dumps == [tree / "host" / "vmcore", tree / "host" / "vmcore.copy"]
    assert found.skipped == []


def test_unlistable_directory_reported_under_every_name(tree: Path) -> None:
    """Found by the fuzz job: a link to an unlistable directory, walked
    first, hid the directory's own name."""
    (tree / "dump.2").mkdir()
    (tree / "dump.2" / "vmcore").write_bytes(b"x")
    (tree / "dump.2").chmod(0o600 if os.geteuid() == 0 else 0o000)
    os.symlink("dump.2", tree / "core")

    def walk() -> int:
        found = discover([str(tree)])
        assert {str(s.path) for s in found.skipped} == {
            str(tree / "core"), str(tree / "dump.2"),
        }  # fmt: skip
        return 0

    outcome = run_unprivileged(walk)
    assert outcome.status == 0, outcome.stderr


def test_deep_tree(tree: Path) -> None:
    """Deeper than Python's recursion limit: the walk keeps its own stack."""
    levels = [tree]
    for _ in range(sys.getrecursionlimit() + 100):
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()
    (levels[-1] / "vmcore").write_bytes(core_bytes())
    try:
        found = discover([str(tree)])
        assert found.dumps == [levels[-1] / "vmcore"] and found.skipped == []
    finally:
        (levels[-1] / "vmcore").unlink()
        for level in reversed(levels[1:]):
            level.rmdir()


def test_cut_kdump_and_flattened_headers_are_specific(tree: Path) -> None:
    (tree / "vmcore.kdump").write_bytes(b"KDUMP   " + bytes(1016))
    (tree / "vmcore.flat").write_bytes(b"makedumpfile" + bytes(4084))
    proc = triage(tree)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    for record in records(proc.stdout).values():
        assert record["status"] == "failed"
        assert record["error"].startswith("cannot open as a dump: "), record
        assert "\n" not in record["error"]
