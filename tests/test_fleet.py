"""The fleet report's engines, records files and crash buckets (no dumps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kho_drgn.bucket import crash_bucket, frame_function
from kho_drgn.triage.fleet import fleet_report, load_queries
from kho_drgn.triage.records import COLUMNS, ParquetWriter, flatten_record

DWARF_STACK = [
    "#0  pvpanic_send_event (drivers/misc/pvpanic/pvpanic.c:53:2)",
    "#1  pvpanic_send_event (drivers/misc/pvpanic/pvpanic.c:46:1)",
    "#2  pvpanic_panic_notify (drivers/misc/pvpanic/pvpanic.c:68:2)",
    "#3  notifier_call_chain (kernel/notifier.c:85:9)",
    "#4  atomic_notifier_call_chain (kernel/notifier.c:223:8)",
    "#5  vpanic (kernel/panic.c:681:2)",
    "#6  panic (kernel/panic.c:788:2)",
    "#7  sysrq_handle_crash (drivers/tty/sysrq.c:154:2)",
    "#8  __handle_sysrq (drivers/tty/sysrq.c:611:4)",
    "#9  write_sysrq_trigger (drivers/tty/sysrq.c:1221:4)",
    "#10 pde_write (fs/proc/inode.c:330:10)",
    "#11 proc_reg_write (fs/proc/inode.c:342:8)",
    "#12 vfs_write (fs/read_write.c:685:9)",
    "#20 entry_SYSCALL_64+0x70/0xae (arch/x86/entry/entry_64.S:121)",
    "#21 0xf000ff53f000e2c3",
]
LOG_STACK = [
    "dump_stack_lvl+0x47/0x6f",
    "dump_stack+0x14/0x16",
    "vpanic+0x1ef/0x3c8",
    "panic+0x59/0x59",
    "sysrq_handle_crash+0x22/0x22",
    "__handle_sysrq+0x93/0x11a",
    "write_sysrq_trigger+0x44/0x5e",
    "? show_regs+0x1/0x2",
    "proc_reg_write+0x67/0x7b",
    "vfs_write.cold+0x96/0x162 [ext4]",
    "ksys_write+0x6b/0x98",
]


def test_crash_bucket_from_dwarf_and_logged_stacks() -> None:
    dwarf = crash_bucket("sysrq triggered crash", DWARF_STACK)
    assert dwarf.frames == ("pde_write", "proc_reg_write", "vfs_write")
    assert dwarf.bucket == (
        "sysrq triggered crash in pde_write < proc_reg_write < vfs_write"
    )
    logged = crash_bucket("Oops at 0xffff0010 cpu 3", LOG_STACK)
    assert logged.message_class == "Oops at N cpu N"
    assert logged.frames == ("proc_reg_write", "vfs_write", "ksys_write")
    assert crash_bucket(None, []).bucket == "(no panic message)"
    assert crash_bucket(" \t", []).bucket == "(no panic message)"  # fuzz
    # an oops under panic_on_oops, as drgn unwinds it through the fault
    oops = crash_bucket(
        "Fatal exception",
        [
            "#0  crash_setup_regs (arch/x86/include/asm/kexec.h:117:15)",
            "#1  __crash_kexec (kernel/crash_core.c:141:4)",
            "#2  panic (kernel/panic.c:788:2)",
            "#3  oops_end (arch/x86/kernel/dumpstack.c:382:3)",
            "#4  page_fault_oops (arch/x86/mm/fault.c:713:2)",
            "#5  do_user_addr_fault (arch/x86/mm/fault.c:1247:3)",
            "#6  exc_page_fault (arch/x86/mm/fault.c:1488:2)",
            "#7  asm_exc_page_fault+0x26/0x30 (arch/x86/include/asm/idtentry.h:623)",
            "#8  my_driver_ioctl (drivers/misc/mine.c:40:9)",
            "#9  __x64_sys_ioctl (fs/ioctl.c:893:1)",
        ],
    )
    assert oops.bucket == "Fatal exception in my_driver_ioctl < __x64_sys_ioctl"
    assert frame_function("#21 0xf000ff53f000e2c3") is None
    assert frame_function("? foo+0x1/0x2") is None
    assert frame_function("#3  bar.isra.0 (x.c:1:1)") == "bar"
    # inlined copies of one function are one frame
    assert crash_bucket("x", ["a+0x1/0x2", "#1  a (f.c:1)", "b+0x1/0x2"]).frames == (
        "a",
        "b",
    )


def record(**kw: Any) -> dict[str, Any]:
    chain = {"line": "l", "kexec_count": 1, "previous_release": "7.2-a",
             "current_release": "7.2-b", "next": {"release": "7.2-b"}}  # fmt: skip
    chain.update(kw.pop("chain", {}))
    out: dict[str, Any] = {
        "dump": "/var/crash/d",
        "host": "h1",
        "host_source": "nodename",
        "status": "ok",
        "error": None,
        "elapsed_s": 0.5,
        "crash_bucket": {"bucket": "Oops in f"},
        "report": {
            "kho": {"status": "kexec"},
            "chain": chain,
            "crash": {"live": False, "panic_reason": "Oops at 0x10", "build_id": "ab"},
            "findings": [{"code": "metadata.unknown-version", "severity": "error"}],
        },
    }
    out.update(kw)
    return out


def hostile_lines() -> list[bytes]:
    """Good records, the edge cases of each column, and bad lines."""
    good = [
        record(),
        record(dump="d2", host="(none)"),  # the kernel's default: no host
        record(dump="d3", chain={"kexec_count": -4}),  # invalid, not ">10"
        record(dump="d4", chain={"kexec_count": 12}),
        record(dump="d5", host="h1", chain={"kexec_count": 3}),
        record(
            dump="d6",
            report={
                "kho": {"status": "cold-boot"},
                "chain": {
                    "line": "x",
                    "kexec_count": 0,
                    "previous_release": None,
                    "current_release": "7.2-b",
                },
                "crash": None,
                "findings": "?",
            },
        ),
        record(dump="d7", crash_bucket=None, elapsed_s=True, host="h2"),
        {"dump": "d8", "status": "failed", "error": "not a vmcore", "report": None},
        {"dump": "d9", "status": "timeout", "error": 5, "host": 7},
        record(dump="d10", host="h\x1b]0;pwn\x07", chain={"current_release": "7\r2"}),
    ]
    bad = [
        record(dump="b1", report={"chain": "?"}),
        record(dump="b2", chain={"kexec_count": "abc"}),
        record(dump="b3", chain={"kexec_count": 2.0}),
        record(dump="b4", chain={"kexec_count": 1 << 70}),
        record(dump="b5", host=["x"]),
        {"status": 5},
        [1, 2],
        {"dump": 5, "status": "failed"},
    ]
    blank_reason = record(dump="d12")
    blank_reason["report"]["crash"]["panic_reason"] = " \t "
    no_kho = record(dump="b6")
    no_kho["report"]["kho"] = None
    lines = [json.dumps(r).encode() for r in good + bad]
    lines += [
        json.dumps(record())[:40].encode(),  # cut
        b'{"status": "ok", "x": NaN}',
        b'{"status": "failed", "dump": "\\ud800"}',  # a lone surrogate
        b'{"status": "ok", "x": "\xff"}',  # not UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # nested 100,000 deep
        b'{"status": "ok", "report": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        # found by the fuzz job: a missing member is a failed check in SQL too
        json.dumps(no_kho).encode(),
        json.dumps(record(dump="d11", elapsed_s=10**400)).encode(),  # past a double
        json.dumps(blank_reason).encode(),
        b"",
    ]
    return lines


def report_of(path: Path, engine: str) -> Any:
    fleet = fleet_report([path], engine)
    try:
        return (
            fleet.dumps,
            fleet.ok,
            fleet.unknown_host,
            fleet.tables,
            list(fleet.failed()),
            [(h.host, h.crashes, h.chain) for h in fleet.hosts()],
            list(fleet.host_crashes()),
        )
    finally:
        fleet.close()


def test_engines_agree_on_hostile_records(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    path = tmp_path / "records.jsonl"
    path.write_bytes(b"\n".join(hostile_lines()) + b"\n")
    duck = report_of(path, "duckdb")
    python = report_of(path, "python")
    assert duck == python
    dumps, ok, unknown, tables, failed, hosts, _ = duck
    assert (dumps, ok, unknown) == (27, 10, 1)
    assert dict(tables["by_kexec_count"])["invalid (negative)"] == 1
    assert dict(tables["by_kexec_count"])[">10"] == 1
    assert dict(tables["by_error_findings"]) == {"metadata.unknown-version": 9}
    assert dict(tables["by_panic"])["(no panic message)"] == 2
    unreadable = {d: e for d, _, e in [f for f in failed if f[1] == "unreadable"]}
    assert len(unreadable) == 14
    assert all(d.startswith(f"{path}:") for d in unreadable)
    assert unreadable[f"{path}:13"] == "malformed record: chain.kexec_count is 2.0"
    assert unreadable[f"{path}:22"].startswith("not UTF-8")
    assert unreadable[f"{path}:23"] == "not JSON: nested too deep"
    assert unreadable[f"{path}:21"] == "not JSON: a lone surrogate escape"
    # -4 is invalid: in no chain; "(none)" is in no host
    assert hosts[1] == ("h1", 7, [
        (0, ["7.2-a", "7.2-b"]), (1, ["7.2-b"]), (2, ["7.2-a"]), (3, ["7.2-b"]),
        (11, ["7.2-a"]), (12, ["7.2-b"]),
    ])  # fmt: skip
    # bad lines in the middle: the whole file is read again by Python
    lines = hostile_lines()
    middle = tmp_path / "middle.jsonl"
    middle.write_bytes(b"\n".join(lines[10:] + lines[:10]) + b"\n")
    assert report_of(middle, "duckdb") == report_of(middle, "python")
    # each line alone, after a good one: DuckDB's own verdict is checked
    for n, line in enumerate(lines):
        alone = tmp_path / f"alone-{n}.jsonl"
        alone.write_bytes(json.dumps(record()).encode() + b"\n" + line + b"\n")
        assert report_of(alone, "duckdb") == report_of(alone, "python"), line[:80]
    # good rows are all read by DuckDB itself in a clean file
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps(record(dump=f"c{i}")) + "\n" for i in range(5)))
    assert report_of(clean, "duckdb") == report_of(clean, "python")


def test_odd_file_names(tmp_path: Path) -> None:
    """Not UTF-8, glob characters, a quote: read as they are, named as
    shown (bytes that are not UTF-8 as \\xNN), the same by both engines."""
    pytest.importorskip("duckdb")
    lines = hostile_lines()
    for raw in (b"rec\xff.jsonl", b"rec[1]*.jsonl", b"it's.jsonl"):
        path = Path(os.fsdecode(bytes(tmp_path) + b"/" + raw))
        path.write_bytes(b"\n".join(lines) + b"\n")
        assert report_of(path, "duckdb") == report_of(path, "python")
        failed = report_of(path, "duckdb")[4]
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        assert (f"{shown}:23", "unreadable", "not JSON: nested too deep") in failed


def test_text_report_escapes_and_exit_status(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_bytes(b"\n".join(hostile_lines()) + b"\n")
    for engine in ("duckdb", "python"):
        proc = subprocess.run(
            [sys.executable, "-m", "kho_drgn.triage.cli", "report", str(path),
             "--hosts", "--engine", engine],
            capture_output=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 1 and b"Traceback" not in proc.stderr
        for stream in (proc.stdout, proc.stderr):
            assert not any(b < 0x20 and b != 0x0A for b in stream), stream
        assert b"h\\x1b]0;pwn\\a" in proc.stdout
        assert f"{path}:23: not JSON: nested too deep".encode() in proc.stderr


def test_parquet_records_report_the_same(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    records = [r for r in (json.loads(x) for x in hostile_lines()[:10])]
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    writer = ParquetWriter(tmp_path / "r.parquet")
    for r in records:
        writer.write(r)
    writer.close()
    import duckdb

    names = [
        c[0]
        for c in duckdb.sql(f"DESCRIBE SELECT * FROM '{tmp_path}/r.parquet'").fetchall()
    ]
    assert names == [name for name, _, _ in COLUMNS]
    assert report_of(tmp_path / "r.parquet", "duckdb") == report_of(jsonl, "duckdb")
    proc = subprocess.run(
        [sys.executable, "-m", "kho_drgn.triage.cli", "report",
         str(tmp_path / "r.*"), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dumps"] == 20


def test_flat_row_and_queries_are_complete() -> None:
    row = flatten_record(record(), "f:1")
    assert set(row) == {name for name, _, _ in COLUMNS}
    assert row["error_findings"] == "metadata.unknown-version"
    assert {"crashes", "by_transition", "host_chain", "failed"} <= set(load_queries())


def test_help_shows_both_subcommands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kho_drgn.triage.cli", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0
    assert "kho-triage report" in proc.stdout and "examples:" in proc.stdout


def test_schema_1_codes_group_with_their_schema_2_names(tmp_path: Path) -> None:
    """A fleet of records from before and after the page reader's codes: the
    old codes are counted under the new ones, by both engines alike."""
    import re

    from kho_drgn.triage.records import REPORT_1_CODES

    sql = load_queries()["duckdb_flatten_jsonl"]
    assert dict(re.findall(r"WHEN '([a-z.-]+)' THEN '([a-z.-]+)'", sql)) == (
        REPORT_1_CODES
    )

    def with_codes(*codes: str) -> dict[str, Any]:
        findings = [{"code": c, "severity": "error"} for c in codes]
        return record(report={**record()["report"], "findings": findings})

    old = with_codes("luo.cycle", "memmap.pointer-unaligned", "subtree.bad-pointer")
    new = with_codes("page.cycle", "page.bad-pointer")
    assert flatten_record(old, "f:1")["error_findings"] == "page.bad-pointer,page.cycle"
    assert flatten_record(new, "f:2")["error_findings"] == "page.bad-pointer,page.cycle"
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    engines = ["python"]
    try:
        import duckdb  # noqa: F401

        engines.append("duckdb")
    except ImportError:
        pass
    for engine in engines:
        tables = report_of(path, engine)[3]
        assert dict(tables["by_error_findings"]) == {
            "page.bad-pointer,page.cycle": 2
        }, engine
