"""Running one worker process per dump, in parallel, with a time limit each."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kho_drgn.triage.discover import dump_kind
from kho_drgn.triage.worker import failed_record


@dataclass
class BatchOptions:
    vmlinux: Path | None = None
    index: dict[str, Path] | None = None
    jobs: int = 1
    timeout: float = 300.0
    with_crash: bool = True


def run_one(
    dump: Path, options: BatchOptions, index_file: Path | None
) -> dict[str, Any]:
    """One dump in its own process; a hang is killed at ``options.timeout``."""
    try:
        with open(dump, "rb"):
            pass
    except OSError as e:
        return failed_record(str(dump), f"cannot open: {e.strerror or e}")
    if dump_kind(dump) is None:
        return failed_record(
            str(dump), "not a vmcore (no ELF core, kdump or flattened-dump header)"
        )
    cmd = [sys.executable, "-m", "kho_drgn.triage.worker", str(dump)]
    if options.vmlinux is not None:
        cmd += ["--vmlinux", str(options.vmlinux)]
    if index_file is not None:
        cmd += ["--index", str(index_file)]
    if not options.with_crash:
        cmd.append("--no-crash")
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=options.timeout
        )
    except subprocess.TimeoutExpired:
        return failed_record(
            str(dump), f"timed out after {options.timeout:g} s", status="timeout"
        )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            record: dict[str, Any] = json.loads(lines[-1])
            return record
        except json.JSONDecodeError:
            pass
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return failed_record(str(dump), f"worker exited {proc.returncode}: {tail}")


def run_batch(
    dumps: list[Path],
    options: BatchOptions,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Records in the order the dumps were given, as they complete in order."""
    with tempfile.TemporaryDirectory(prefix="kho-triage-") as tmp:
        index_file = None
        if options.index:
            index_file = Path(tmp) / "index.json"
            index_file.write_text(
                json.dumps({k: str(v) for k, v in options.index.items()})
            )
        with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
            futures = [pool.submit(run_one, d, options, index_file) for d in dumps]
            for done, future in enumerate(futures, 1):
                record = future.result()
                if progress is not None:
                    progress(done, len(dumps), record)
                yield record
