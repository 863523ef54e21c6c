"""kho-triage over the shared dumps plus generated bad dumps, and its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixturedata import fixture_files, load_truth

from kho_drgn.bucket import panic_signature
from kho_drgn.triage.discover import dump_kind, elf_build_id, for_each_dump

pytestmark = pytest.mark.fixtures


def triage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kho_drgn.triage.cli", *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def batch(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[dict[str, Any]], int]:
    """A /var/crash-like tree: the real dumps, a truncated copy, random bytes."""
    root = tmp_path_factory.mktemp("crash")
    debug = tmp_path_factory.mktemp("debuginfo")
    for name in ("chain-aab", "cold-b", "off-b", "kdump"):
        vmcore, vmlinux = fixture_files(load_truth(name))
        (root / f"host-{name}").mkdir()
        os.symlink(vmcore, root / f"host-{name}" / "vmcore")
        link = debug / f"{name}-vmlinux"
        if not link.exists():
            os.symlink(vmlinux, link)
    vmcore, _ = fixture_files(load_truth("chain-aab"))
    (root / "host-truncated").mkdir()
    with open(vmcore, "rb") as src:
        (root / "host-truncated" / "vmcore").write_bytes(src.read(1 << 20))
    (root / "host-random").mkdir()
    (root / "host-random" / "vmcore").write_bytes(os.urandom(1 << 16))
    (root / "host-random" / "dmesg.txt").write_text("not a dump\n")
    out = root / "records.jsonl"
    proc = triage(str(root), "--debuginfo-dir", str(debug), "-j", "2", "-o", str(out))
    assert "Traceback" not in proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return out, records, proc.returncode


def by_host(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {Path(r["dump"]).parent.name.removeprefix("host-"): r for r in records}


def test_one_record_per_dump_and_run_completes(batch: Any) -> None:
    _, records, status = batch
    assert status == 1  # some dumps failed, the run still finished
    recs = by_host(records)
    assert set(recs) == {"chain-aab", "cold-b", "off-b", "kdump", "truncated", "random"}
    for name in ("chain-aab", "cold-b", "off-b", "kdump"):
        assert recs[name]["status"] == "ok", recs[name]
        assert recs[name]["vmlinux_match"] == "build-id"
        assert recs[name]["report"]["target"]["symbols"] == "dwarf"
    assert recs["truncated"]["status"] == "failed"
    assert "not in the dump" in recs["truncated"]["error"]
    assert recs["random"]["status"] == "failed"
    assert "not a vmcore" in recs["random"]["error"]
    # Each dump matched its own vmlinux by BUILD-ID (two different builds).
    assert recs["kdump"]["vmlinux"] != recs["chain-aab"]["vmlinux"]


def test_parquet_records_give_the_same_report(batch: Any, tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    out, records, _ = batch
    parquet = tmp_path / "records.parquet"
    vmcores = [r["dump"] for r in records]
    proc = triage(*vmcores, "--debuginfo-dir", str(out.parent.parent / "debuginfo0"),
                  "-o", str(parquet))  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    from_jsonl = json.loads(triage("report", str(out), "--json").stdout)
    from_parquet = json.loads(triage("report", str(parquet), "--json").stdout)
    for key in ("dumps", "ok", "by_transition", "by_kexec_count", "by_crash_bucket"):
        assert from_parquet[key] == from_jsonl[key], key


def test_wrong_vmlinux_falls_back_and_says_so() -> None:
    vmcore, _ = fixture_files(load_truth("kdump"))
    _, other_vmlinux = fixture_files(load_truth("chain-aab"))
    proc = triage(str(vmcore), "--vmlinux", str(other_vmlinux))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["vmlinux_match"] == "explicit"
    assert "does not match" in record["vmlinux_error"]
    assert record["report"]["target"]["symbols"] == "kallsyms"
    assert record["report"]["chain"]["kexec_count"] == 2


def test_crash_bucket_from_the_logged_call_trace() -> None:
    """Without vmlinux the bucket comes from the call trace in the log."""
    vmcore, _ = fixture_files(load_truth("chain-aab"))
    proc = triage(str(vmcore))
    record = json.loads(proc.stdout)
    assert record["report"]["target"]["symbols"] == "kallsyms"
    assert record["crash_bucket"] == {
        "bucket": "sysrq triggered crash in proc_reg_write < vfs_write < ksys_write",
        "message_class": "sysrq triggered crash",
        "frames": ["proc_reg_write", "vfs_write", "ksys_write"],
        "stack_source": "log",
    }


def test_report_totals_match_records(batch: Any) -> None:
    out, records, _ = batch
    proc = triage("report", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    fleet = json.loads(proc.stdout)
    assert fleet["dumps"] == len(records) == 6
    assert fleet["ok"] == 4 and len(fleet["failed"]) == 2
    assert fleet["by_transition"]["7.2.13-kho-a -> 7.2.13-kho-b"] == 2
    assert fleet["by_transition"]["cold boot -> 7.2.13-kho-b"] == 1
    assert sum(fleet["by_transition"].values()) == fleet["ok"]
    assert sum(fleet["by_kexec_count"].values()) == fleet["ok"]
    assert fleet["by_panic"] == {"sysrq triggered crash": 4}
    pairs = fleet["by_transition_and_panic"]
    assert sum(p["crashes"] for p in pairs) == fleet["ok"]
    assert {"transition": "7.2.13-kho-a -> 7.2.13-kho-b",
            "panic": "sysrq triggered crash", "crashes": 2} in pairs  # fmt: skip
    # The numbers the report gave on this batch before DuckDB (captured
    # then), from both engines.
    for engine in ("duckdb", "python"):
        got = json.loads(
            triage("report", str(out), "--json", "--engine", engine).stdout
        )
        assert got["by_transition"] == {
            "7.2.13-kho-a -> 7.2.13-kho-b": 2,
            "cold boot -> 7.2.13-kho-b": 1,
            "(disabled) 7.2.13-kho-b": 1,
        }
        assert got["by_kexec_count"] == {"2": 2, "0 (cold boot)": 1, "unknown": 1}
        assert [p["crashes"] for p in got["by_transition_and_panic"]] == [2, 1, 1]
    # the fixtures' kernels never set a hostname ("(none)") and their
    # directories are not kdump's <host>-<date>: no host, not pieced together
    assert fleet["hosts"] == [] and fleet["unknown_host"] == 4
    assert fleet["by_crash_bucket"] == {
        "sysrq triggered crash in pde_write < proc_reg_write < vfs_write": 4
    }
    text = triage("report", str(out))
    assert "7.2.13-kho-a -> 7.2.13-kho-b" in text.stdout
    assert "(host unknown): 4 dump(s)" in text.stdout


def test_discovery_and_helpers(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "vmcore").write_bytes(b"x")
    (tmp_path / "a" / "vmcore-dmesg.txt").write_text("x")
    (tmp_path / "a" / "notes").write_text("x")
    # Named otherwise, a dump is still found by its header; a vmlinux is not.
    elf = bytearray(64)
    elf[:6] = b"\x7fELF\x02\x01"
    elf[16] = 4  # ET_CORE
    (tmp_path / "a" / "host1.vmcore").write_bytes(bytes(elf))
    elf[16] = 2  # ET_EXEC
    (tmp_path / "a" / "vmlinux-7.2.13").write_bytes(bytes(elf))
    (tmp_path / "a" / "host2.dump").write_bytes(b"KDUMP   " + bytes(8))
    assert [p.name for p in for_each_dump([str(tmp_path)])] == [
        "host1.vmcore", "host2.dump", "vmcore",
    ]  # fmt: skip
    assert dump_kind(tmp_path / "a" / "vmlinux-7.2.13") is None
    assert elf_build_id(tmp_path / "a" / "vmcore") is None
    assert panic_signature("Oops at 0xffff1234 cpu 3") == "Oops at N cpu N"


def test_host_from_nodename_else_kdump_directory() -> None:
    from kho_drgn.triage.worker import host_of

    crash = "/var/crash/10.0.0.7-2026-11-25-03:12:44/vmcore"
    assert host_of("db17", crash) == ("db17", "nodename")
    assert host_of("(none)", crash) == ("10.0.0.7", "kdump-directory")
    assert host_of(None, "/var/crash/web-3.example-2026-11-25-03:12/vmcore") == (
        "web-3.example", "kdump-directory",
    )  # fmt: skip
    # "(none)" is no host: such dumps are not pieced into one chain
    assert host_of("(none)", "/var/crash/202611250312/dump.202611250312") == (
        None, None,
    )  # fmt: skip
    assert host_of(None, "/tmp/vmcore") == (None, None)


def test_usage_errors() -> None:
    assert triage().returncode == 2
    assert triage("report", "/nonexistent.jsonl").returncode == 2
    for bad in (["--timeout", "0"], ["-j", "-3"]):
        proc = triage("/nonexistent.vmcore", *bad)
        assert proc.returncode == 2 and "must be positive" in proc.stderr


def test_missing_dump_and_vmlinux_say_so() -> None:
    proc = triage("/nonexistent.vmcore")
    assert proc.returncode == 1
    record = json.loads(proc.stdout)
    assert record["status"] == "skipped"
    assert record["error"] == "cannot open: No such file or directory"
    assert "skipped /nonexistent.vmcore" in proc.stderr
    vmcore, _ = fixture_files(load_truth("cold-b"))
    proc = triage(str(vmcore), "--vmlinux", "/nonexistent/vmlinux")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--vmlinux /nonexistent/vmlinux: No such file or directory" in proc.stderr


def test_vmlinux_error_is_always_in_the_record() -> None:
    vmcore, vmlinux = fixture_files(load_truth("cold-b"))
    proc = triage(str(vmcore), "--vmlinux", str(vmlinux))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["status"] == "ok" and record["vmlinux_match"] == "explicit"
    assert "vmlinux_error" in record and record["vmlinux_error"] is None


def test_report_lists_unreadable_records_and_goes_on(tmp_path: Path) -> None:
    """A cut-off last line or a foreign record is listed, not fatal: exit 1."""
    good = {"dump": "ok.vmcore", "status": "ok", "host": "h", "report": {
        "kho": {"status": "cold-boot"},
        "chain": {"kexec_count": 0, "previous_release": None,
                  "current_release": "7.2"},
        "crash": None}}  # fmt: skip
    records = tmp_path / "records.jsonl"
    records.write_text(
        json.dumps(good) + "\n"
        + json.dumps({"status": "ok", "report": {"chain": "?"}}) + "\n"
        + "[1, 2]\n"
        + json.dumps(good)[:30] + "\n"
    )  # fmt: skip
    proc = triage("report", str(records), "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    fleet = json.loads(proc.stdout)
    assert fleet["ok"] == 1 and fleet["by_transition"] == {"cold boot -> 7.2": 1}
    failed = {f["dump"]: f for f in fleet["failed"]}
    assert set(failed) == {f"{records}:{n}" for n in (2, 3, 4)}
    assert all(f["status"] == "unreadable" for f in failed.values())
    assert "not JSON" in failed[f"{records}:4"]["error"]
    assert f"{records}:2: malformed record" in proc.stderr


def test_per_dump_time_limit_kills_the_worker() -> None:
    from kho_drgn.triage.batch import BatchOptions, run_one

    vmcore, _ = fixture_files(load_truth("chain-aab"))
    record = run_one(vmcore, BatchOptions(timeout=0.05), None)
    assert record["status"] == "timeout"
    assert "timed out after 0.05 s" in record["error"]
