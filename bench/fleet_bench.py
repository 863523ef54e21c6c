#!/usr/bin/env python3
"""Benchmark ``kho-triage report`` at fleet scale against a bare JSON parse.

N synthetic records are made from real kho-triage records (hosts and dump
paths varied) into a temporary directory, never kept.  The baseline, in the
same run and on the same file, is a Python loop that only ``json.loads``
each line.  Printed: a Markdown table of wall time, the ratio to the
baseline, and peak RSS of each process.

    python3 bench/fleet_bench.py --seed records.jsonl [-n 100000 -n 1000000]
        [--engine duckdb|python] [--repeat R] [--cut-last-line] [--tmpdir DIR]

``records.jsonl`` comes from ``kho-triage DIR -o records.jsonl`` over real
dumps (the fixtures: see README, "Fleet scale").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_PARSE = (
    "import json, sys\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for line in f:\n"
    "        json.loads(line)\n"
)


def make_records(seed: list[dict[str, object]], n: int, out: Path) -> int:
    """``n`` records cycling through ``seed``, each with its own dump path and
    one of n/10 hosts (kdump ``<host>-<date>`` directories); returns bytes."""
    templates = []
    for record in seed:
        record = dict(record)
        record["dump"] = "@DUMP@"
        record["host"] = "@HOST@"
        record["host_source"] = "kdump-directory"
        templates.append(json.dumps(record))
    hosts = max(1, n // 10)
    with open(out, "w") as f:
        for i in range(n):
            host = f"host-{i % hosts:07d}"
            dump = f"/var/crash/{host}-2026-11-{1 + i % 28:02d}-03:12:44/vmcore.{i}"
            line = templates[i % len(templates)]
            f.write(
                line.replace('"@DUMP@"', json.dumps(dump), 1).replace(
                    '"@HOST@"', json.dumps(host), 1
                )
                + "\n"
            )
    return out.stat().st_size


def measure(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit status of one process."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, 1):
        print(f"{cmd[-3:]} exited {proc.returncode}: {err[-500:]}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=Path, required=True, help="real kho-triage records")
    p.add_argument("-n", type=int, action="append", help="record counts")
    p.add_argument("--engine", default="duckdb", choices=("duckdb", "python"))
    p.add_argument("--tmpdir", help="where the synthetic records go")
    p.add_argument(
        "--repeat", type=int, default=1, help="rounds (medians of wall time)"
    )
    p.add_argument(
        "--cut-last-line",
        action="store_true",
        help="end the file with half a record, as a killed run leaves it",
    )
    args = p.parse_args()
    seed = [json.loads(line) for line in args.seed.read_text().splitlines() if line]
    rows = []
    for n in args.n or [100_000, 1_000_000]:
        with tempfile.TemporaryDirectory(
            prefix="kho-fleet-bench-", dir=args.tmpdir
        ) as tmp:
            records = Path(tmp) / "records.jsonl"
            size = make_records(seed, n, records)
            if args.cut_last_line:
                with open(records, "a") as f:
                    f.write(json.dumps(seed[0])[:100] + "\n")
                size = records.stat().st_size
            cmd = [
                sys.executable, "-m", "kho_drgn.triage.cli", "report", str(records),
                "--json", "--engine", args.engine,
            ]  # fmt: skip
            bare = [sys.executable, "-c", BARE_PARSE, str(records)]
            base_runs, runs = [], []
            for _ in range(args.repeat):
                # alternated, so a busy machine weighs on both alike
                base_runs.append(measure(bare))
                runs.append(measure(cmd))
            base_wall = statistics.median(r[0] for r in base_runs)
            base_rss = max(r[1] for r in base_runs)
            wall = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            status = max(r[2] for r in runs)
            cut = " (last line cut)" if args.cut_last_line else ""
            rows.append(
                f"| {n:,}{cut} | {size / 2**30:.2f} GiB | {args.engine} "
                f"| {base_wall:.1f} s "
                f"| {base_rss:.0f} MiB | {wall:.1f} s | {wall / base_wall:.2f}x "
                f"| {rss:.0f} MiB | {status} |"
            )
            print(rows[-1], flush=True)
    print(
        "| records | JSON Lines | engine | bare parse | its peak RSS "
        "| report --json | ratio | report peak RSS | exit |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
