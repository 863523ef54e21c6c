"""``kho-triage``: kho-drgn over many dumps, and the fleet report.

    kho-triage [run] DUMP|GLOB|DIR... [-o RECORDS.jsonl] [--vmlinux F]
               [--debuginfo-dir D]... [--jobs N] [--timeout S] [--no-crash]
    kho-triage report RECORDS.jsonl|RECORDS.parquet|GLOB... [--json] [--hosts]

``run`` exits 0 when every dump was analysed, 1 when any failed or timed
out, 2 on bad arguments; ``report`` exits 0, 1 when some lines were not
records (bad JSON or shape: listed by file:line, and the rest reported), 2
when a file cannot be read.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from kho_drgn.triage.batch import BatchOptions, run_batch
from kho_drgn.triage.discover import for_each_dump, index_debuginfo
from kho_drgn.triage.records import UNREADABLE, open_record_writer


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    return parse


RUN_EXAMPLES = """\
examples:
  kho-triage /var/crash --debuginfo-dir /usr/lib/debug -o records.jsonl
  kho-triage /var/crash -o records.parquet     # flat Parquet for a warehouse

subcommands:
  kho-triage [run] DUMP|GLOB|DIR...   analyse dumps (this help)
  kho-triage report RECORDS...        group records across a fleet
                                      (kho-triage report --help)
"""


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kho-triage",
        description="triage KHO dumps in batch: one record per dump",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dumps", nargs="+", metavar="DUMP", help="dump files, globs or directories"
    )
    p.add_argument(
        "-o", "--output", type=Path,
        help="records file: JSON Lines (default stdout), Parquet if it ends .parquet",
    )  # fmt: skip
    p.add_argument("--vmlinux", type=Path, help="use this vmlinux for every dump")
    p.add_argument(
        "--debuginfo-dir", type=Path, action="append", default=[],
        help="directory of vmlinux files, matched to each dump by BUILD-ID",
    )  # fmt: skip
    p.add_argument(
        "-j", "--jobs", type=_positive(int), default=os.cpu_count() or 1,
        help="dumps analysed at once (default: CPU count)",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=_positive(float), default=300.0,
        help="seconds per dump (default 300)",
    )  # fmt: skip
    p.add_argument("--no-crash", action="store_true", help="skip the crash context")
    return p


def _progress(stream: IO[str]) -> Any:
    def show(done: int, total: int, record: dict[str, Any]) -> None:
        stream.write(f"\rkho-triage: {done}/{total} {record.get('status', '?'):7}")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show


def run_main(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    dumps = list(for_each_dump(args.dumps))
    if not dumps:
        print("kho-triage: no dumps found", file=sys.stderr)
        return 1
    options = BatchOptions(
        vmlinux=args.vmlinux,
        index=index_debuginfo(args.debuginfo_dir) if args.debuginfo_dir else None,
        jobs=args.jobs,
        timeout=args.timeout,
        with_crash=not args.no_crash,
    )
    progress = _progress(sys.stderr) if sys.stderr.isatty() else None
    try:
        # JSON Lines, or Parquet by the .parquet extension (records.py)
        out = open_record_writer(args.output, sys.stdout)
    except (OSError, RuntimeError) as e:
        print(f"kho-triage: {e}", file=sys.stderr)
        return 2
    failed = 0
    try:
        for record in run_batch(dumps, options, progress):
            failed += record.get("status") != "ok"
            out.write(record)
    finally:
        out.close()
    return 1 if failed else 0


REPORT_EXAMPLES = """\
examples:
  kho-triage report records.jsonl
  kho-triage report 'records-*.jsonl' old.parquet --json > fleet.json
  kho-triage report records.jsonl --hosts     # also every dump of each host

exit status: 0 all records read, 1 some lines were not records (listed with
file:line, the rest reported), 2 a file cannot be read or bad usage.
"""


def _report_parser() -> argparse.ArgumentParser:
    from kho_drgn.triage.fleet import available_engines

    p = argparse.ArgumentParser(
        prog="kho-triage report",
        description="group triage records across a fleet: kexec transitions,\n"
        "kexec_count, panic signatures, crash buckets, error findings, and\n"
        "each host's kexec chain",
        epilog=REPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "records", nargs="+", metavar="RECORDS",
        help="JSON Lines or .parquet files from kho-triage run, or globs of them",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    p.add_argument(
        "--hosts", action="store_true", help="also list every dump of each host"
    )
    p.add_argument(
        "--engine", choices=available_engines(), default=available_engines()[0],
        help="duckdb (default when installed) or the python fallback",
    )  # fmt: skip
    return p


def _expand(patterns: list[str]) -> list[Path] | str:
    """Files named or matched; a message when a pattern matches nothing."""
    import glob

    files: list[Path] = []
    for pattern in patterns:
        if os.path.lexists(pattern) or not glob.has_magic(pattern):
            files.append(Path(pattern))
            continue
        matched = sorted(glob.glob(pattern))
        if not matched:
            return f"{pattern}: no file matches"
        files.extend(Path(m) for m in matched)
    return files


def report_main(argv: list[str]) -> int:
    from kho_drgn.escape import escape_text
    from kho_drgn.triage.fleet import (
        FleetError,
        fleet_report,
        render_fleet,
        write_fleet_json,
    )

    args = _report_parser().parse_args(argv)
    files = _expand(args.records)
    if isinstance(files, str):
        print(f"kho-triage report: {escape_text(files)}", file=sys.stderr)
        return 2
    try:
        fleet = fleet_report(files, args.engine)
    except FleetError as e:
        print(f"kho-triage report: {escape_text(str(e))}", file=sys.stderr)
        return 2
    unreadable = 0
    try:
        if args.json:
            write_fleet_json(fleet, sys.stdout, hosts=args.hosts)
        else:
            render_fleet(fleet, sys.stdout, hosts=args.hosts)
        sys.stdout.flush()
        for dump, status, error in fleet.failed():
            if status == UNREADABLE:
                unreadable += 1
                print(
                    f"kho-triage report: {escape_text(dump)}: "
                    f"{escape_text(error or '')}",
                    file=sys.stderr,
                )
    except BrokenPipeError:
        # e.g. `| head`: the reader has gone; no traceback at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        fleet.close()
    return 1 if unreadable else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["report"]:
            return report_main(argv[1:])
        return run_main(argv[1:] if argv[:1] == ["run"] else argv)
    except SystemExit as e:  # argparse: 2 on bad usage, 0 for --help
        return int(e.code or 0)


if __name__ == "__main__":
    sys.exit(main())
