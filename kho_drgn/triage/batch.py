"""Running one worker process per dump, in parallel, with a time limit each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kho_drgn.safefiles import open_regular
from kho_drgn.triage.discover import dump_kind, reason
from kho_drgn.triage.worker import failed_record

#: At most this many workers per CPU, whatever ``--jobs`` asks for.
JOBS_PER_CPU = 4


def max_jobs(dumps: int) -> int:
    """How many workers are worth running: no more than the dumps, nor than
    a few per CPU (drgn is CPU- and I/O-bound; more only thrash)."""
    return max(1, min(dumps, JOBS_PER_CPU * (os.cpu_count() or 1)))


@dataclass
class Workers:
    """The worker processes running now, so that an interrupted batch can
    end them instead of leaving them to run on."""

    running: set[subprocess.Popen[str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: bool = False

    def kill_all(self) -> None:
        with self.lock:
            self.stopped = True
            for proc in self.running:
                proc.kill()


@dataclass
class BatchOptions:
    vmlinux: Path | None = None
    index: dict[str, Path] | None = None
    jobs: int = 1
    timeout: float = 300.0
    with_crash: bool = True


def run_one(
    dump: Path,
    options: BatchOptions,
    index_file: Path | None,
    workers: Workers | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """One dump in its own process; a hang is killed at ``options.timeout``.

    The worker runs in ``cwd`` (the batch's private, empty directory) with
    absolute paths: ``python -m`` puts its working directory first on
    ``sys.path``, and nothing in a crash tree may ever be imported.
    """
    try:
        with open_regular(dump):
            pass
    except OSError as e:
        return failed_record(str(dump), f"cannot open: {reason(e)}")
    if dump_kind(dump) is None:
        return failed_record(
            str(dump), "not a vmcore (no ELF core, kdump or flattened-dump header)"
        )
    cmd = [sys.executable, "-m", "kho_drgn.triage.worker", os.path.abspath(dump)]
    if options.vmlinux is not None:
        cmd += ["--vmlinux", os.path.abspath(options.vmlinux)]
    if index_file is not None:
        cmd += ["--index", str(index_file)]
    if not options.with_crash:
        cmd.append("--no-crash")
    workers = Workers() if workers is None else workers
    with workers.lock:
        if workers.stopped:
            return failed_record(str(dump), "batch interrupted", status="skipped")
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=cwd if cwd is not None else tempfile.gettempdir(),
            )
        except OSError as e:
            return failed_record(str(dump), f"cannot start a worker: {reason(e)}")
        workers.running.add(proc)
    try:
        stdout, stderr = proc.communicate(timeout=options.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return failed_record(
            str(dump), f"timed out after {options.timeout:g} s", status="timeout"
        )
    finally:
        with workers.lock:
            workers.running.discard(proc)
    lines = stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            record: dict[str, Any] = json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
        else:
            record["dump"] = str(dump)  # as it was given
            return record
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    return failed_record(str(dump), f"worker exited {proc.returncode}: {tail}")


def run_batch(
    dumps: list[Path],
    options: BatchOptions,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> Generator[dict[str, Any], None, None]:
    """Records in the order the dumps were given, as they complete in order.

    Closing the iterator early (an interrupted run) cancels the dumps not
    started and kills the workers running.
    """
    workers = Workers()
    with tempfile.TemporaryDirectory(prefix="kho-triage-") as tmp:
        index_file = None
        workdir = Path(tmp) / "cwd"  # empty: the workers' working directory
        workdir.mkdir()
        if options.index:
            index_file = Path(tmp) / "index.json"
            index_file.write_text(
                json.dumps({k: os.path.abspath(v) for k, v in options.index.items()})
            )
        pool = ThreadPoolExecutor(max_workers=max(1, options.jobs))
        try:
            futures = [
                pool.submit(run_one, d, options, index_file, workers, workdir)
                for d in dumps
            ]
            for done, future in enumerate(futures, 1):
                record = future.result()
                if progress is not None:
                    progress(done, len(dumps), record)
                yield record
        finally:
            workers.kill_all()
            pool.shutdown(wait=True, cancel_futures=True)
