"""Analyse one dump in this process and print one JSON record.

Run by ``kho-triage`` as ``python -m kho_drgn.triage.worker`` so that a dump
which crashes or hangs drgn costs only its own process.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import drgn

from kho_drgn.safefiles import open_regular
from kho_drgn.triage.discover import (
    dump_kind,
    elf_build_id,
    elf_core_problem,
    reason,
)

RECORD_SCHEMA = "kho-drgn/triage-record/1"
_UTS_FIELD = 65  # struct new_utsname: six char[65]; nodename is the second


def failed_record(dump: str, error: str, status: str = "failed") -> dict[str, Any]:
    return {
        "schema": RECORD_SCHEMA,
        "dump": dump,
        "host": None,
        "host_source": None,
        "vmlinux": None,
        "vmlinux_match": "none",
        "vmlinux_error": None,
        "status": status,
        "error": error,
        "elapsed_s": None,
        "report": None,
    }


#: kdump-utils' default dump directory: ``/var/crash/<host>-<YYYY-MM-DD-HH:MM[:SS]>``,
#: where <host> is the machine's IP address or name.
_KDUMP_DIR_RE = re.compile(r"(?P<host>.+?)-\d{4}-\d{2}-\d{2}-\d{2}:\d{2}(?::\d{2})?")
#: What the kernel's nodename is before anything sets it.
_UNSET_NODENAMES = ("", "(none)", "localhost", "localhost.localdomain")


def host_of(node: str | None, dump: str) -> tuple[str | None, str | None]:
    """The host a dump came from and where that was read: the crashed
    kernel's nodename, or, when the host never set one, the host part of a
    kdump ``<host>-<date>`` directory the dump lies in; else unknown."""
    if node is not None and node not in _UNSET_NODENAMES:
        return node, "nodename"
    match = _KDUMP_DIR_RE.fullmatch(Path(dump).parent.name)
    if match:
        return match["host"], "kdump-directory"
    # "(none)" names no host: dumps of unrelated machines must not be
    # pieced into one host's chain.
    return None, None


def nodename(prog: drgn.Program) -> str | None:
    """The host name the crashed kernel had (``uname -n``)."""
    from kho_drgn.target import TARGET_ERRORS
    from kho_drgn.vmcoreinfo import read_vmcoreinfo

    try:
        return str(prog["init_uts_ns"].name.nodename.string_().decode())
    except TARGET_ERRORS:
        pass
    info = read_vmcoreinfo(prog)
    uts = info.number("SYMBOL(init_uts_ns)") if info else None
    name_off = info.number("OFFSET(uts_namespace.name)") if info else None
    if uts is None or name_off is None:
        return None
    try:
        raw = prog.read(uts + name_off + _UTS_FIELD, _UTS_FIELD)
    except TARGET_ERRORS:
        return None
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace") or None


def analyse(
    dump: str, vmlinux: str | None, index: dict[str, str], with_crash: bool
) -> dict[str, Any]:
    """Open ``dump``, load the matching vmlinux if any, return a record."""
    from kho_drgn.cli import TargetUnreadable, build_report
    from kho_drgn.report import report_to_dict
    from kho_drgn.vmcoreinfo import read_vmcoreinfo

    start = time.monotonic()
    record = failed_record(dump, "")
    if dump_kind(Path(dump)) == "elf":
        # libelf's own message for these is "invalid operation"
        problem = elf_core_problem(Path(dump))
        if problem is not None:
            record["error"] = problem
            return record
    prog = drgn.Program()
    try:
        prog.set_core_dump(dump)
    except Exception as e:
        # BadDataError: e.g. a VMCOREINFO note without OSRELEASE; plain
        # Exception: libelf and libkdumpfile errors (one line, no newline)
        record["error"] = f"cannot open as a dump: {str(e).strip()}"
        return record
    info = read_vmcoreinfo(prog)
    build_id = info.build_id if info else None
    if vmlinux is not None:
        record["vmlinux_match"] = "explicit"
    elif build_id and build_id in index:
        vmlinux, record["vmlinux_match"] = index[build_id], "build-id"
    if vmlinux is not None:
        try:
            with open_regular(Path(vmlinux)):
                pass
            prog.load_debug_info([vmlinux])
        except drgn.MissingDebugInfoError as e:
            record["vmlinux_error"] = str(e)
        except OSError as e:
            record["vmlinux_error"] = f"cannot read {vmlinux}: {reason(e)}"
        record["vmlinux"] = vmlinux
    record["host"], record["host_source"] = host_of(nodename(prog), dump)
    try:
        report = build_report(prog, with_crash=with_crash)
    except TargetUnreadable as e:
        record["error"] = str(e)
        return record
    record.update(status="ok", error=None, report=report_to_dict(report))
    record["crash_bucket"] = bucket_of(record["report"])
    symbols = report.target.symbols
    if (symbols is None or symbols.value != "dwarf") and vmlinux is not None:
        record["vmlinux_error"] = record.get("vmlinux_error") or _not_used(
            vmlinux, build_id
        )
    record["elapsed_s"] = round(time.monotonic() - start, 3)
    return record


def bucket_of(report: dict[str, Any]) -> dict[str, Any] | None:
    """The crash bucket of a report (:mod:`kho_drgn.bucket`), or ``None``
    without a crash context."""
    from kho_drgn.bucket import crash_bucket

    crash = report.get("crash")
    if not isinstance(crash, dict):
        return None
    found = crash_bucket(crash.get("panic_reason"), crash.get("stack_trace") or [])
    return {
        "bucket": found.bucket,
        "message_class": found.message_class,
        "frames": list(found.frames),
        "stack_source": crash.get("stack_trace_source"),
    }


def _not_used(vmlinux: str, build_id: str | None) -> str:
    """Why drgn ignored a readable vmlinux (it matches files by build ID)."""
    own = elf_build_id(Path(vmlinux))
    if own is None:
        return f"{vmlinux} was not used: it is not an ELF file with a GNU build ID"
    return (
        f"{vmlinux} was not used: its build ID {own} does not match the dump's "
        f"BUILD-ID {build_id}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kho_drgn.triage.worker")
    parser.add_argument("dump")
    parser.add_argument("--vmlinux")
    parser.add_argument("--index", type=Path, help="JSON file: build ID -> vmlinux")
    parser.add_argument("--no-crash", action="store_true")
    args = parser.parse_args(argv)
    index = json.loads(args.index.read_text()) if args.index else {}
    try:
        record = analyse(args.dump, args.vmlinux, index, not args.no_crash)
    except Exception as e:  # one record per dump, whatever happened
        record = failed_record(args.dump, f"internal error: {type(e).__name__}: {e}")
    json.dump(record, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    from kho_drgn.cli import exit_without_teardown

    exit_without_teardown(main())  # one dump per process: skip drgn's teardown
