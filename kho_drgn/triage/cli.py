"""``kho-triage``: kho-drgn over many dumps, and the fleet report.

    kho-triage [run] DUMP|GLOB|DIR... [-o RECORDS.jsonl] [--vmlinux F]
               [--debuginfo-dir D]... [--jobs N] [--timeout S]
               [--discovery-timeout S] [--no-crash]
    kho-triage report RECORDS.jsonl|RECORDS.parquet|GLOB... [--json] [--hosts]

``run`` exits 0 when every dump was analysed, 1 when any failed or timed
out or a path was skipped, 2 on bad arguments (before any work; an ``-o``
that is an input is one), 130 when interrupted (``-o`` not written).
``report`` exits 0, 1 when some lines were not records (bad JSON or shape:
listed by file:line, and the rest reported), 2 when a file cannot be read.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from kho_drgn.escape import escape_text
from kho_drgn.safefiles import file_kind, identity, open_regular
from kho_drgn.triage.batch import JOBS_PER_CPU, BatchOptions, max_jobs, run_batch
from kho_drgn.triage.discover import (
    TIMED_OUT,
    DebuginfoIndex,
    Discovery,
    DiscoveryTimeout,
    Skipped,
    discover,
    dump_kind,
    index_debuginfo,
    reason,
)
from kho_drgn.triage.records import (
    UNREADABLE,
    JsonlWriter,
    ParquetWriter,
    RecordWriter,
)
from kho_drgn.triage.worker import failed_record

#: The longest ``--timeout``/``--discovery-timeout``: timers past it overflow.
MAX_SECONDS = 1e6

#: Exit status of ``run`` when interrupted (SIGINT, SIGTERM): 128 + SIGINT.
INTERRUPTED = 130


class UsageError(Exception):
    """A bad argument found after parsing: one line, exit 2."""


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            finite = " and finite" if kind is float else ""
            raise argparse.ArgumentTypeError(f"must be positive{finite}, not {text}")
        if kind is float and value > MAX_SECONDS:
            raise argparse.ArgumentTypeError(
                f"at most {MAX_SECONDS:g} s (about 11 days), not {text}"
            )
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
        help="records file: JSON Lines (default stdout), Parquet if it ends "
        ".parquet; written in full or not at all",
    )  # fmt: skip
    p.add_argument("--vmlinux", type=Path, help="use this vmlinux for every dump")
    p.add_argument(
        "--debuginfo-dir", type=Path, action="append", default=[],
        help="directory of vmlinux files, matched to each dump by BUILD-ID",
    )  # fmt: skip
    p.add_argument(
        "-j", "--jobs", type=_positive(int), default=os.cpu_count() or 1,
        help="dumps analysed at once (default: CPU count; at most "
        "4 per CPU and one per dump)",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=_positive(float), default=300.0,
        help="seconds per dump (default 300)",
    )  # fmt: skip
    p.add_argument(
        "--discovery-timeout", type=_positive(float), default=120.0,
        help="seconds for finding the dumps and indexing --debuginfo-dir "
        "(default 120); what is not read by then is reported as skipped",
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


def _warn(message: str) -> None:
    print(f"kho-triage: {message}", file=sys.stderr)


def check_inputs(vmlinux: Path | None, debuginfo_dirs: Iterable[Path]) -> None:
    """``--vmlinux`` must be a readable regular file and each
    ``--debuginfo-dir`` a directory that can be listed.

    :raises UsageError: one of them is not.
    """
    if vmlinux is not None:
        try:
            with open_regular(vmlinux):
                pass
        except OSError as e:
            raise UsageError(f"--vmlinux {vmlinux}: {reason(e)}") from None
    for top in debuginfo_dirs:
        try:
            with os.scandir(top):
                pass
        except OSError as e:
            raise UsageError(f"--debuginfo-dir {top}: {reason(e)}") from None


def output_target(output: Path) -> Path:
    """The file ``-o`` names, symbolic links resolved, once it is known that
    a new file can be put there.

    :raises UsageError: it is a directory, a FIFO or device, or its
        directory is missing or not writable.
    """
    target = Path(os.path.realpath(output))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UsageError(f"-o {output}: {reason(e)}") from None
    else:
        if not stat.S_ISREG(st.st_mode):
            kind = file_kind(st.st_mode)
            raise UsageError(f"-o {output}: is a {kind}, not a regular file")
        try:
            with open_regular(target):
                pass
        except OSError as e:
            raise UsageError(
                f"-o {output}: exists and cannot be read ({reason(e)}), so it "
                "cannot be checked not to be a dump; it is not written over"
            ) from None
        if dump_kind(target) is not None:
            raise UsageError(f"-o {output}: is a dump; it is never written over")
    if not target.parent.is_dir():
        raise UsageError(f"-o {output}: directory {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise UsageError(f"-o {output}: cannot create files in {target.parent}")
    return target


def check_not_an_input(
    target: Path, paths: Iterable[Path], identities: set[tuple[int, int]]
) -> None:
    """Refuse an output that is, or is a link (symbolic or hard) to, a file
    or directory read as input: writing it would lose a dump.

    :raises UsageError: it is one.
    """
    try:
        st = os.stat(target)
    except OSError:
        pass
    else:
        if identity(st) in identities:
            raise UsageError(
                f"-o {target}: is an input (a dump, vmlinux or debuginfo file, "
                "or a link to one); it is never written over"
            )
    for path in paths:
        if os.path.realpath(path) == str(target):
            raise UsageError(
                f"-o {target}: is the input {escape_text(str(path))}; "
                "it is never written over"
            )


class AtomicOutput:
    """JSON Lines written to a temporary file beside the target and renamed
    over it only when complete, so the target is never left truncated: an
    interrupted run leaves it as it was."""

    def __init__(self, target: Path) -> None:
        self.target = target
        try:
            fd, name = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".kho-triage.tmp", dir=target.parent
            )
        except OSError as e:
            raise UsageError(
                f"-o {target}: cannot create a file in {target.parent}: {reason(e)}"
            ) from None
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        self.temp = Path(name)
        self.stream: IO[str] = os.fdopen(fd, "w")

    def commit(self) -> None:
        """Put the records in place, on disk before the rename.  The file is
        synced by its name: a writer may have replaced it (DuckDB's Parquet
        COPY makes a new file), leaving the stream on an unlinked inode."""
        self.stream.flush()
        self.stream.close()
        fd = os.open(self.temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.temp, self.target)
        with contextlib.suppress(OSError):  # the rename itself, where possible
            dirfd = os.open(self.target.parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)

    def discard(self) -> None:
        self.stream.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


class _Interrupted(Exception):
    pass


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`DiscoveryTimeout` after ``seconds``, even in a blocking
    system call (an NFS or FUSE file that never answers)."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise DiscoveryTimeout

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _find_inputs(
    args: argparse.Namespace,
) -> tuple[Discovery, DebuginfoIndex | None]:
    deadline = time.monotonic() + args.discovery_timeout
    found: Discovery | None = None
    index: DebuginfoIndex | None = None
    try:
        # the alarm is a backstop for blocking calls: a little after the deadline
        with _alarm(args.discovery_timeout + 1):
            found = discover(args.dumps, deadline)
            if args.debuginfo_dir:
                index = index_debuginfo(args.debuginfo_dir, deadline)
    except DiscoveryTimeout:  # the alarm, between two checks of the deadline
        pass
    if found is None:
        found = Discovery(skipped=[Skipped(Path(a), TIMED_OUT) for a in args.dumps])
    if index is None and args.debuginfo_dir:
        index = DebuginfoIndex(
            skipped=[Skipped(d, TIMED_OUT) for d in args.debuginfo_dir]
        )
    return found, index


def _protected(
    args: argparse.Namespace, found: Discovery, index: DebuginfoIndex | None
) -> tuple[list[Path], set[tuple[int, int]]]:
    """Every path and file identity the run reads: what ``-o`` must not be."""
    paths = [Path(a) for a in args.dumps] + found.dumps
    paths += [s.path for s in found.skipped] + list(args.debuginfo_dir)
    identities = found.inputs | (index.inputs if index else set())
    if index is not None:
        paths += list(index.by_build_id.values())
        paths += [s.path for s in index.skipped]
    if args.vmlinux is not None:
        paths.append(args.vmlinux)
    for path in paths:
        with contextlib.suppress(OSError):
            identities.add(identity(os.stat(path)))
    return paths, identities


def run_main(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted

    # SIGTERM is an interruption from here on: the temporary output, made
    # before discovery, is removed and -o left as it was (exit 130).
    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        return _run_main(args)
    finally:
        signal.signal(signal.SIGTERM, old_term)


def _run_main(args: argparse.Namespace) -> int:
    output: AtomicOutput | None = None
    try:
        check_inputs(args.vmlinux, args.debuginfo_dir)
        if args.output:
            # what can be refused without a walk is refused before it; the
            # temporary file (a new name: never an input) proves the place
            # writable before any work
            target = output_target(args.output)
            check_not_an_input(target, *_protected(args, Discovery(), None))
            if target.suffix.lower() == ".parquet" and not _have_duckdb():
                raise UsageError(
                    f"-o {target}: writing Parquet needs DuckDB: "
                    "pip install 'kho-drgn[fleet]'"
                )
            output = AtomicOutput(target)
        found, index = _find_inputs(args)
        if output is not None:
            check_not_an_input(output.target, *_protected(args, found, index))
    except (UsageError, KeyboardInterrupt, _Interrupted) as e:
        if output is not None:
            output.discard()
        if isinstance(e, (KeyboardInterrupt, _Interrupted)):
            _warn("interrupted while finding the dumps")
            return INTERRUPTED
        _warn(escape_text(str(e)))
        return 2
    except BaseException:
        if output is not None:
            output.discard()
        raise
    for skipped in found.skipped:
        _warn(f"skipped {escape_text(str(skipped.path))}: {skipped.reason}")
    debuginfo_skipped = index.skipped if index else []
    for skipped in debuginfo_skipped:
        _warn(
            f"--debuginfo-dir: skipped {escape_text(str(skipped.path))}: "
            f"{skipped.reason}"
        )
    if not found.dumps and not found.skipped:
        if output is not None:
            output.discard()
        _warn("no dumps found")
        return 1
    jobs = min(args.jobs, max_jobs(len(found.dumps)))
    if args.jobs > max_jobs(args.jobs):
        _warn(
            f"-j {args.jobs} capped at {jobs} "
            f"(at most {JOBS_PER_CPU} per CPU, 1 per dump)"
        )
    options = BatchOptions(
        vmlinux=args.vmlinux,
        index=index.by_build_id if index else None,
        jobs=jobs,
        timeout=args.timeout,
        with_crash=not args.no_crash,
    )
    return _run_batch(found, options, output, skipped=bool(debuginfo_skipped))


def _run_batch(
    found: Discovery,
    options: BatchOptions,
    output: AtomicOutput | None,
    skipped: bool,
) -> int:
    """Records of the skipped paths, then one per dump; the output file is
    put in place only when all are written."""

    progress = _progress(sys.stderr) if sys.stderr.isatty() else None
    out = _record_writer(output)
    failed = skipped
    try:
        for item in found.skipped:
            out.write(_skipped_record(item))
            failed = True
        with contextlib.closing(run_batch(found.dumps, options, progress)) as batch:
            for record in batch:
                failed |= record.get("status") != "ok"
                out.write(record)
        out.close()
        if output is not None:
            output.commit()
    except (KeyboardInterrupt, _Interrupted):
        if output is not None:
            output.discard()
        where = escape_text(str(output.target)) if output else ""
        _warn("interrupted" + (f": {where} not written" if output else ""))
        return INTERRUPTED
    except OSError as e:  # disk full, quota, I/O error
        if output is not None:
            output.discard()
        where = escape_text(str(output.target)) if output else ""
        _warn(
            f"stopped: {escape_text(str(e))}"
            + (f"; {where} not written" if output else "")
        )
        return 1
    except BaseException:
        if output is not None:
            output.discard()
        raise
    return 1 if failed else 0


def _have_duckdb() -> bool:
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def _record_writer(output: AtomicOutput | None) -> RecordWriter:
    """JSON Lines on stdout or into the temporary file; Parquet (by the
    target's ``.parquet`` extension, see :mod:`kho_drgn.triage.records`)
    written into the temporary file at the end, then renamed like the rest."""
    if output is None:
        return JsonlWriter(sys.stdout)
    if output.target.suffix.lower() == ".parquet":
        return ParquetWriter(output.temp)
    return JsonlWriter(output.stream)


def _skipped_record(skipped: Skipped) -> dict[str, Any]:
    return failed_record(str(skipped.path), skipped.reason, status="skipped")


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
