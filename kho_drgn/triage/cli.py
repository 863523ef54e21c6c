"""``kho-triage``: kho-drgn over many dumps, and the fleet report.

    kho-triage [run] DUMP|GLOB|DIR... [-o RECORDS.jsonl] [--vmlinux F]
               [--debuginfo-dir D]... [--jobs N] [--timeout S] [--no-crash]
    kho-triage report RECORDS.jsonl... [--json]

``run`` exits 0 when every dump was analysed, 1 when any failed or timed
out, 2 on bad arguments; ``report`` exits 0, 1 when some records could not
be read (bad JSON or shape: listed, and the rest reported), 2 when a file
cannot be opened.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from kho_drgn.triage.batch import BatchOptions, run_batch
from kho_drgn.triage.discover import for_each_dump, index_debuginfo
from kho_drgn.triage.fleet import (
    UNREADABLE,
    fleet_report,
    fleet_to_dict,
    render_fleet,
    unreadable_record,
)


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    return parse


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kho-triage", description="triage KHO dumps in batch"
    )
    p.add_argument(
        "dumps", nargs="+", metavar="DUMP", help="dump files, globs or directories"
    )
    p.add_argument(
        "-o", "--output", type=Path, help="JSON Lines output (default stdout)"
    )
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
    out = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
    failed = 0
    try:
        for record in run_batch(dumps, options, progress):
            failed += record.get("status") != "ok"
            out.write(json.dumps(record) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return 1 if failed else 0


def report_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="kho-triage report", description="group triage records"
    )
    p.add_argument(
        "records", nargs="+", type=Path, help="JSON Lines from kho-triage run"
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    records = []
    for path in args.records:
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            print(f"kho-triage report: {e}", file=sys.stderr)
            return 2
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                # e.g. the last line of a run that was killed mid-write
                record = unreadable_record(where, f"not JSON: {e}")
            if not isinstance(record, dict):
                record = unreadable_record(where, "record is not an object")
            record.setdefault("dump", where)
            records.append(record)
    fleet = fleet_report(records)
    if args.json:
        print(json.dumps(fleet_to_dict(fleet), indent=2))
    else:
        sys.stdout.write(render_fleet(fleet))
    unreadable = [r for r in fleet.failed if r.get("status") == UNREADABLE]
    for record in unreadable:
        print(
            f"kho-triage report: {record['dump']}: {record['error']}", file=sys.stderr
        )
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
