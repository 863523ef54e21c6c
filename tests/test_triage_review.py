"""Crash-pipeline defects found by review, each pinned: never import from the
crash tree, never lose records to DuckDB, never write over an unreadable dump."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixturedata import fixture_files, load_truth
from hostilefs import open_tmp_dir, run_unprivileged
from test_fleet import record, report_of

from kho_drgn.triage import cli
from kho_drgn.triage.discover import discover
from kho_drgn.triage.records import valid_unicode


def triage(
    *args: str | Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    # -P: as the kho-triage console script, the CLI itself does not put its
    # working directory on sys.path (python -m would, by Python's rules)
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    return subprocess.run(
        [sys.executable, *safe, "-m", "kho_drgn.triage.cli", *map(str, args)],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip


@pytest.mark.fixtures
def test_nothing_in_the_crash_tree_is_imported(tmp_path: Path) -> None:
    """A drgn.py (or json.py, kho_drgn/) in the tree or the working directory
    is never run by the workers, however kho-triage is started."""
    vmcore, _ = fixture_files(load_truth("cold-b"))
    tree = tmp_path / "crash"
    tree.mkdir()
    (tree / "vmcore").symlink_to(vmcore)
    marker = tmp_path / "PWNED"
    for module in ("drgn.py", "json.py"):
        (tree / module).write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    proc = triage(".", cwd=tree)
    assert not marker.exists()
    assert proc.returncode == 0, proc.stderr
    (rec,) = map(json.loads, proc.stdout.splitlines())
    assert rec["status"] == "ok" and rec["dump"] == "vmcore"  # as it was given


def _lines(*records: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_a_file_duckdb_refuses_whole_loses_no_other_records(tmp_path: Path) -> None:
    """A records file whose tail is NULs (power loss while appending) makes
    DuckDB refuse it whole: every file is then read by the Python reader, and
    both engines give the same numbers."""
    pytest.importorskip("duckdb")
    good = tmp_path / "good.jsonl"
    good.write_bytes(_lines(record(dump="g1"), record(dump="g2")))
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(_lines(record(dump="c1")) + b"\0" * (20 << 20))
    duck = report_of(cut, "duckdb"), report_of(good, "duckdb")
    py = report_of(cut, "python"), report_of(good, "python")
    assert duck == py
    proc = triage("report", cut, good, "--json")
    assert proc.returncode == 1, proc.stderr  # the NUL line is listed
    assert json.loads(proc.stdout)["dumps"] == 4
    assert "cut.jsonl:2" in proc.stderr


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(_lines(record(dump="a"), record(dump="b")) + b"{cut\n")
    for engine in ("duckdb", "python"):
        proc = triage("report", path, path, "--json", "--engine", engine)
        assert json.loads(proc.stdout)["dumps"] == 3, (engine, proc.stderr)


def test_non_utf8_names_make_readable_records(tmp_path: Path) -> None:
    bad = os.fsdecode(b"bad\xffname.vmcore")
    assert valid_unicode({"dump": bad, "x": [bad]}) == {
        "dump": "bad\\xffname.vmcore",
        "x": ["bad\\xffname.vmcore"],
    }
    out = tmp_path / "r.jsonl"
    proc = triage(
        Path(os.fsdecode(bytes(tmp_path) + b"/" + b"bad\xff.vmcore")), "-o", out
    )
    assert proc.returncode == 1  # a path that does not exist: skipped
    report = triage("report", out, "--json")
    assert report.returncode == 0, report.stderr  # the record reads back


def test_an_existing_name_with_glob_characters_is_that_file(tmp_path: Path) -> None:
    (tmp_path / "vmcore[1]").write_bytes(b"x")
    (tmp_path / "vmcore1").write_bytes(b"y")
    found = discover([str(tmp_path / "vmcore[1]")])
    assert found.dumps == [tmp_path / "vmcore[1]"]


def test_timeouts_past_what_timers_take_are_refused(tmp_path: Path) -> None:
    for option in ("--timeout", "--discovery-timeout"):
        proc = triage(tmp_path, option, "1e10", "-o", tmp_path / "r.jsonl")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "at most" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_an_existing_output_that_cannot_be_read_is_not_written_over() -> None:
    """A dump the triage user cannot read is still never overwritten."""
    with open_tmp_dir() as tmp_path:
        _unreadable_output(tmp_path)


def _unreadable_output(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    dump = spool / "vmcore"
    dump.write_bytes(b"\x7fELF" + bytes(60))
    dump.chmod(0o600)  # root's; the run is unprivileged
    os.chmod(spool, 0o777)
    before = dump.read_bytes()
    outcome = run_unprivileged(
        lambda: cli.main([str(tmp_path / "none"), "-o", str(dump)])
    )
    assert outcome.status == 2, outcome.stderr
    assert "cannot be read" in outcome.stderr
    assert dump.read_bytes() == before


def test_parquet_placeholder_hosts_are_unknown(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    from kho_drgn.triage.records import ParquetWriter

    flat = tmp_path / "flat.parquet"
    writer = ParquetWriter(flat)
    for n in range(2):
        writer.write(record(dump=f"d{n}", host=f"h{n}"))
    writer.close()
    none = tmp_path / "none.parquet"
    duckdb.sql(
        f"COPY (SELECT * REPLACE ('(none)' AS host) FROM read_parquet('{flat}')) "
        f"TO '{none}' (FORMAT PARQUET)"
    )
    proc = triage("report", none, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "(none)" not in json.loads(proc.stdout)["hosts"]


def test_links_into_the_live_system_are_not_followed(tmp_path: Path) -> None:
    """A crash tree linking to /proc (whose kcore is an ELF core) or /sys:
    reported, never walked or taken; a top named on the command line is."""
    (tmp_path / "proc").symlink_to("/proc")
    (tmp_path / "sys").symlink_to("/sys")
    (tmp_path / "self").symlink_to("/proc/self/status")
    found = discover([str(tmp_path)])
    assert found.dumps == []
    reasons = {s.path.name: s.reason for s in found.skipped}
    assert reasons == {
        "proc": "a link into /proc: not read",
        "self": "a link into /proc: not read",
        "sys": "a link into /sys: not read",
    }
    # named on the command line (a capture kernel's /proc/vmcore): taken
    assert discover(["/proc/self/status"]).dumps == [Path("/proc/self/status")]


def test_the_fleet_transition_follows_the_chain(tmp_path: Path) -> None:
    """kho_in zeroed after boot reads as a cold boot (kho.status), but the
    chain follows the boot line and outgoing count: the transition is the
    chain's, in both engines."""
    damaged = record(dump="d1")
    damaged["report"]["kho"]["status"] = "cold-boot"  # as the variables read
    cold = record(dump="d2", chain={"kexec_count": 0, "previous_release": None})
    cold["report"]["kho"]["status"] = "cold-boot"
    path = tmp_path / "r.jsonl"
    path.write_bytes(_lines(damaged, cold))
    for engine in ("duckdb", "python"):
        proc = triage("report", path, "--json", "--engine", engine)
        by = json.loads(proc.stdout)["by_transition"]
        assert by == {"7.2-a -> 7.2-b": 1, "cold boot -> 7.2-b": 1}, (engine, by)
