"""Triage records as flat rows, and the writers of records files.

A kho-triage record (one JSON object per dump) nests the whole report; a
warehouse and the fleet report want one flat row per dump, one column per
field they group on (:data:`COLUMNS`).  :func:`flatten_record` is the one
definition of that row; the DuckDB reader in :mod:`kho_drgn.triage.fleet`
computes the same columns in SQL, and a test holds the two together.

Writers take the path they are told to write and nothing else: JSON Lines
(the default) or Parquet (by the ``.parquet`` extension, through DuckDB).
"""

from __future__ import annotations

import json
import os
import reprlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from kho_drgn.bucket import panic_signature

__all__ = (
    "COLUMNS",
    "REPORT_1_CODES",
    "UNREADABLE",
    "FlatRecord",
    "RecordWriter",
    "flatten_record",
    "for_each_jsonl_row",
    "parse_json_line",
)

#: ``status`` of a line that is not a kho-triage record (bad JSON or shape).
UNREADABLE = "unreadable"

#: The flat schema (Parquet and the fleet report's ``records`` table):
#: name, SQL type, meaning.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("dump", "VARCHAR", "the dump's path (for an unreadable line: file:line)"),
    ("host", "VARCHAR", "host name, NULL when unknown (never '(none)')"),
    ("host_source", "VARCHAR", "nodename | kdump-directory | NULL"),
    ("status", "VARCHAR", "ok | failed | timeout | unreadable"),
    ("error", "VARCHAR", "why the dump (or line) could not be analysed"),
    ("kho_status", "VARCHAR", "report.kho.status: kexec, cold-boot, disabled, ..."),
    ("kexec_count", "BIGINT", "report.chain.kexec_count"),
    ("previous_release", "VARCHAR", "report.chain.previous_release"),
    ("current_release", "VARCHAR", "report.chain.current_release"),
    ("next_release", "VARCHAR", "report.chain.next.release"),
    ("panic_reason", "VARCHAR", "report.crash.panic_reason"),
    ("panic_signature", "VARCHAR", "panic_reason, numbers masked"),
    ("crash_bucket", "VARCHAR", "crash_bucket.bucket (kho_drgn.bucket)"),
    ("error_findings", "VARCHAR", "codes of error findings, sorted, comma-joined"),
    ("elapsed_s", "DOUBLE", "seconds the analysis took"),
    ("build_id", "VARCHAR", "report.crash.build_id (the crashed kernel's)"),
)

#: Finding codes of report schema 1 (``kho-drgn/report/1``) that schema 2
#: renamed (README, "Schema versions"): ``error_findings`` names them by the
#: new code, so records written before and after group together.  The
#: ``duckdb_flatten_jsonl`` query in queries.sql has the same table.
REPORT_1_CODES = {
    "memmap.pointer-unaligned": "page.bad-pointer",
    "memmap.pointer-out-of-range": "page.bad-pointer",
    "memmap.cycle": "page.cycle",
    "memmap.too-many-nodes": "page.too-many",
    "subtree.bad-pointer": "page.bad-pointer",
    "subtree.cycle": "page.cycle",
    "luo.bad-pointer": "page.bad-pointer",
    "luo.cycle": "page.cycle",
}

#: Host names that only say the host never set one (the kernel's default).
UNSET_HOSTS = ("", "(none)", "localhost", "localhost.localdomain")

FlatRecord = dict[str, Any]

_INT64 = (-(1 << 63), (1 << 63) - 1)


class _Malformed(ValueError):
    pass


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and _INT64[0] <= value <= _INT64[1]
    )


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def _get(data: dict[str, Any], key: str, where: str, kind: str, optional: bool) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    checks: dict[str, Callable[[Any], bool]] = {
        "str": _is_str,
        "int": _is_int,
        "dict": _is_dict,
    }
    if not checks[kind](value):
        raise _Malformed(f"{where}.{key} is {_short(value)}")
    return value


def _short(value: Any) -> str:
    """A bounded repr: a deeply nested value must not recurse without end."""
    text = reprlib.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lenient_str(data: Any, key: str) -> str | None:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _empty_row(dump: str, status: str, error: str | None) -> FlatRecord:
    row: FlatRecord = dict.fromkeys(name for name, _, _ in COLUMNS)
    row.update(dump=dump, status=status, error=error)
    return row


def unreadable_row(where: str, why: str) -> FlatRecord:
    """The row of a line that is not a kho-triage record."""
    return _empty_row(where, UNREADABLE, why)


def flatten_record(record: Any, where: str) -> FlatRecord:
    """The flat row of one parsed record; ``where`` (``file:line``) names it
    when it has no ``dump`` and is the ``dump`` of an unreadable line.

    A record that is not an object, has no string ``status``, or is ``ok``
    without the report fields the fleet report groups on (of the right JSON
    type) gives a row with status ``unreadable`` and the reason.
    """
    if not isinstance(record, dict):
        return unreadable_row(where, "record is not an object")
    status = record.get("status")
    if not isinstance(status, str):
        return unreadable_row(where, "not a kho-triage record: no status")
    dump = record.get("dump")
    dump = dump if isinstance(dump, str) else where
    row = _empty_row(dump, status, _lenient_str(record, "error"))
    host = record.get("host")
    if status == "ok":
        try:
            _ok_fields(record, row)
        except _Malformed as e:
            return unreadable_row(where, f"malformed record: {e}")
    elif host is not None and not isinstance(host, str):
        host = None
    row["host"] = None if host in UNSET_HOSTS else host
    row["host_source"] = _lenient_str(record, "host_source") if row["host"] else None
    elapsed = record.get("elapsed_s")
    if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool):
        try:
            row["elapsed_s"] = float(elapsed)
        except OverflowError:  # an integer past any double, as DuckDB reads it
            row["elapsed_s"] = float("inf") if elapsed > 0 else float("-inf")
    bucket = record.get("crash_bucket")
    row["crash_bucket"] = _lenient_str(bucket, "bucket")
    return row


def _ok_fields(record: dict[str, Any], row: FlatRecord) -> None:
    """The fields of an ``ok`` record, type-checked, into ``row``."""
    _get(record, "host", "record", "str", True)
    report = _get(record, "report", "record", "dict", False)
    chain = _get(report, "chain", "report", "dict", False)
    kho = _get(report, "kho", "report", "dict", False)
    row["kho_status"] = _get(kho, "status", "report.kho", "str", False)
    row["kexec_count"] = _get(chain, "kexec_count", "chain", "int", True)
    row["previous_release"] = _get(chain, "previous_release", "chain", "str", True)
    row["current_release"] = _get(chain, "current_release", "chain", "str", True)
    row["next_release"] = _lenient_str(chain.get("next"), "release")
    crash = _get(report, "crash", "report", "dict", True)
    if crash is not None:
        row["panic_reason"] = _get(crash, "panic_reason", "crash", "str", True)
        row["build_id"] = _lenient_str(crash, "build_id")
    row["panic_signature"] = panic_signature(row["panic_reason"])
    findings = report.get("findings")
    codes = sorted(
        {
            _schema_2_code(f["code"])
            for f in (findings if isinstance(findings, list) else ())
            if isinstance(f, dict)
            and f.get("severity") == "error"
            and isinstance(f.get("code"), str)
        }
    )
    row["error_findings"] = ",".join(codes) if codes else None


def _schema_2_code(code: str) -> str:
    """A finding code by its report schema 2 name."""
    return REPORT_1_CODES.get(code, code)


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def parse_json_line(line: bytes) -> Any:
    """One line of JSON as DuckDB's reader takes it: UTF-8, ``NaN`` and
    ``Infinity`` allowed, no lone surrogate escape (``"\\ud800"``).

    :raises ValueError: with the reason (bad UTF-8, bad JSON, nested too
        deep for the reader).
    """
    try:
        text = line.decode("utf-8").rstrip("\r\n")
        value = json.loads(text)
        if "\\u" in text and _has_surrogate(value):
            raise ValueError("not JSON: a lone surrogate escape")
        return value
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8: byte {e.start}") from None
    except RecursionError:
        raise ValueError("not JSON: nested too deep") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None


def display_path(path: Path) -> str:
    """A path as valid Unicode: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def for_each_jsonl_row(
    path: Path, stream: Iterable[bytes], first: int = 1
) -> Iterator[FlatRecord]:
    """The flat rows of a JSON Lines stream, one per non-blank line; a line
    that is not a record is an ``unreadable`` row named ``path:line``
    (``first`` is the number of the stream's first line)."""
    name = display_path(path)
    for n, line in enumerate(stream, first):
        if not line.strip():
            continue
        where = f"{name}:{n}"
        try:
            record = parse_json_line(line)
        except ValueError as e:
            # e.g. the last line of a run that was killed mid-write
            yield unreadable_row(where, str(e))
            continue
        yield flatten_record(record, where)


class RecordWriter(Protocol):
    """Where kho-triage puts its records: one :meth:`write` per dump."""

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def valid_unicode(value: Any) -> Any:
    """``value`` with every string valid Unicode: a path's bytes that are not
    UTF-8 (Python's lone surrogates) written ``\\xNN``, as
    :func:`display_path` does, so every record can be read back."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape").decode(
                "utf-8", "backslashreplace"
            )
        return value
    if isinstance(value, dict):
        return {valid_unicode(k): valid_unicode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_unicode(v) for v in value]
    return value


@dataclass
class JsonlWriter:
    """JSON Lines, one record per line, flushed as each dump completes, on a
    stream its owner closes (stdout, or kho-triage's temporary output)."""

    stream: IO[str]

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(valid_unicode(record)) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class ParquetWriter:
    """Parquet in the flat schema of :data:`COLUMNS`, written at
    :meth:`close` (DuckDB's writer; records are few, dumps are slow)."""

    def __init__(self, path: Path) -> None:
        """:raises OSError: if ``path`` cannot be written (checked now: the
        file itself is written at :meth:`close`)."""
        import duckdb

        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise OSError(f"{path}: is a directory")
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise OSError(f"{path}: cannot write in {parent}")
        self.path = path
        self.db = duckdb.connect()
        self.db.execute("SET threads = 1; SET memory_limit = '256MB'")
        self.db.execute(
            "CREATE TABLE records ("
            + ", ".join(f"{name} {kind}" for name, kind, _ in COLUMNS)
            + ")"
        )
        self.rows: list[tuple[Any, ...]] = []

    def write(self, record: dict[str, Any]) -> None:
        record = valid_unicode(record)
        dump = str(record.get("dump") or "?")
        row = flatten_record(record, dump)
        self.rows.append(tuple(row[name] for name, _, _ in COLUMNS))

    def close(self) -> None:
        import duckdb

        try:
            marks = ", ".join("?" for _ in COLUMNS)
            if self.rows:
                self.db.executemany(f"INSERT INTO records VALUES ({marks})", self.rows)
            target = str(self.path).replace("'", "''")
            self.db.execute(f"COPY records TO '{target}' (FORMAT PARQUET)")
        except duckdb.Error as e:
            raise OSError(f"{self.path}: {str(e).splitlines()[0]}") from None
        finally:
            self.db.close()
