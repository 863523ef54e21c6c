"""The fleet report: which kexec transitions crash, and how, over any number
of triage records.

The groupings are the SQL of ``queries.sql`` over a ``records`` table in the
flat schema of :data:`kho_drgn.triage.records.COLUMNS`.  Two engines load
that table:

* DuckDB (``kho-drgn[fleet]``): reads JSON Lines and Parquet itself,
  out-of-core under a memory limit, spilling to a temporary directory.  A
  file with lines it cannot take as records is read again by the Python
  reader, which names each such line by ``file:line``.
* the fallback, without DuckDB: the Python reader streams JSON Lines into a
  temporary SQLite database (standard library) and the same SQL runs there.

Both give the same numbers (a test holds them together).  Memory depends on
the engine's bounded buffers, not on the record count; the per-dump host
listing is opt-in and streamed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

from kho_drgn.escape import escape_text
from kho_drgn.safefiles import identity
from kho_drgn.triage.records import (
    COLUMNS,
    UNREADABLE,
    UNSET_HOSTS,
    FlatRecord,
    display_path,
    for_each_jsonl_row,
    parse_json_line,
)

__all__ = (
    "DUCKDB_MEMORY_LIMIT_MB",
    "FleetError",
    "FleetReport",
    "HostChain",
    "available_engines",
    "fleet_report",
    "load_queries",
    "render_fleet",
    "write_fleet_json",
)

#: DuckDB's memory limit; the rest of the process stays well under 512 MiB.
DUCKDB_MEMORY_LIMIT_MB = 256
_BATCH = 10_000
_TABLES = (
    "by_transition",
    "by_kexec_count",
    "by_panic",
    "by_transition_and_panic",
    "by_crash_bucket",
    "by_transition_and_crash_bucket",
    "by_error_findings",
    "by_transition_with_error_findings",
)


class FleetError(Exception):
    """Records that cannot be read at all (a file that cannot be opened, a
    Parquet file without the flat schema); the message says which."""


def load_queries() -> dict[str, str]:
    """The named queries of ``queries.sql``: name -> SQL text."""
    text = resources.files("kho_drgn.triage").joinpath("queries.sql").read_text()
    queries: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("-- name: "):
            name = line.removeprefix("-- name: ").strip()
            queries[name] = ""
        elif name is not None and not line.startswith("--"):
            queries[name] += line + "\n"
    return {k: v.strip() for k, v in queries.items()}


@dataclass
class HostChain:
    """The kernels one host ran at each kexec_count, pieced together from its
    dumps: each dump names its own kernel (at its count) and the previous one
    (at count - 1).  More than one release at a position means the dumps come
    from different boot chains."""

    host: str
    crashes: int
    chain: list[tuple[int, list[str]]] = field(default_factory=list)


@dataclass
class FleetReport:
    """The grouped tables (one row per distinct value) and cursors over the
    long lists (hosts, failed), which the renderers stream."""

    engine: str
    dumps: int
    ok: int
    unknown_host: int
    #: table name -> rows (label columns..., crashes)
    tables: dict[str, list[tuple[Any, ...]]]
    _db: Any

    def failed(self) -> Iterator[tuple[str, str, str | None]]:
        """(dump, status, error) of every record that was not analysed,
        unreadable lines included, by dump."""
        yield from _stream(self._db, "failed")

    def hosts(self) -> Iterator[HostChain]:
        """Each known host (sorted) with its crash count and chain."""
        chains = _stream(self._db, "host_chain")
        pending = next(chains, None)
        for host, crashes in _stream(self._db, "host_dumps"):
            entry = HostChain(host, crashes)
            while pending is not None and pending[0] == host:
                _, position, release = pending
                if entry.chain and entry.chain[-1][0] == position:
                    entry.chain[-1][1].append(release)
                else:
                    entry.chain.append((position, [release]))
                pending = next(chains, None)
            yield entry

    def host_crashes(
        self,
    ) -> Iterator[tuple[str, int | None, str | None, str | None, str]]:
        """(host, kexec_count, previous, release, dump) of every dump of a
        known host, by host then kexec_count."""
        yield from _stream(self._db, "host_crashes")

    def close(self) -> None:
        spill = _spill_dir(self._db) if self.engine == "duckdb" else None
        self._db.close()
        if spill:
            _remove_later(spill)


def _stream(db: Any, name: str) -> Iterator[Any]:
    cursor = db.cursor()
    try:
        cursor.execute(load_queries()[name])
        while True:
            rows = cursor.fetchmany(_BATCH)
            if not rows:
                return
            for row in rows:
                yield tuple(row)
    finally:
        cursor.close()


def available_engines() -> list[str]:
    """``duckdb`` (when installed) and ``python``."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return ["python"]
    return ["duckdb", "python"]


def fleet_report(
    paths: Iterable[Path], engine: str | None = None, tmpdir: str | None = None
) -> FleetReport:
    """Load the records files (JSON Lines, or ``.parquet`` with DuckDB) and
    run the groupings; ``engine`` is ``duckdb``, ``python`` or ``None``
    (DuckDB when installed).  The caller closes the report.

    :raises FleetError: if a file cannot be read at all.
    """
    engine = engine or available_engines()[0]
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for path in paths:
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                raise FleetError(f"{path}: not a regular file")
            with open(path, "rb"):
                pass
        except OSError as e:
            raise FleetError(f"{path}: {e.strerror or e}") from None
        # one file named twice (a glob and its name, a link) is read once,
        # so both engines count its records once
        if identity(st) not in seen:
            seen.add(identity(st))
            files.append(path)
    if engine == "duckdb":
        import duckdb

        try:
            db = _duckdb_load(files, tmpdir)
        except duckdb.Error as e:
            # e.g. a file that vanished, or out of memory and disk to spill
            raise FleetError(f"DuckDB: {_first_line(e)}") from None
        except OSError as e:
            raise FleetError(f"{type(e).__name__}: {e}") from None
    elif engine == "python":
        try:
            db = _sqlite_load(files, tmpdir)
        except (OSError, sqlite3.Error) as e:
            # e.g. a read error, or no room for the temporary database
            raise FleetError(f"{type(e).__name__}: {e}") from None
    else:
        raise ValueError(f"unknown engine {engine!r}")
    try:
        queries = load_queries()
        cursor = db.cursor()
        cursor.execute(f"CREATE VIEW crashes AS {queries['crashes']}")
        cursor.execute(queries["totals"])
        dumps, ok = cursor.fetchone()
        cursor.execute(queries["unknown_host"])
        (unknown,) = cursor.fetchone()
        tables = {}
        for name in _TABLES:
            cursor.execute(queries[name])
            tables[name] = [tuple(row) for row in cursor.fetchall()]
        cursor.close()
    except BaseException:
        db.close()
        raise
    return FleetReport(engine, dumps, ok, unknown, tables, db)


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


_SQLITE_TYPES = {"VARCHAR": "TEXT", "BIGINT": "INTEGER", "DOUBLE": "REAL"}


def _sqlite_load(files: list[Path], tmpdir: str | None) -> sqlite3.Connection:
    parquet = [str(p) for p in files if _is_parquet(p)]
    if parquet:
        raise FleetError(
            f"{parquet[0]}: reading Parquet needs DuckDB: pip install 'kho-drgn[fleet]'"
        )
    fd, name = tempfile.mkstemp(prefix="kho-fleet-", suffix=".db", dir=tmpdir)
    os.close(fd)
    db = sqlite3.connect(name)
    os.unlink(name)  # the open connection keeps it; nothing is left behind
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -65536")  # 64 MiB
    db.execute("PRAGMA temp_store = FILE")
    db.execute(
        "CREATE TABLE records ("
        + ", ".join(f"{n} {_SQLITE_TYPES[t]}" for n, t, _ in COLUMNS)
        + ")"
    )
    for path in files:
        with open(path, "rb") as stream:
            _insert(db, for_each_jsonl_row(path, stream))
    db.commit()
    return db


def _insert(db: Any, rows: Iterable[FlatRecord]) -> None:
    names = [n for n, _, _ in COLUMNS]
    marks = ", ".join("?" * len(names))
    sql = f"INSERT INTO records ({', '.join(names)}) VALUES ({marks})"
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(tuple(row[n] for n in names))
        if len(batch) >= _BATCH:
            db.executemany(sql, batch)
            batch.clear()
    if batch:
        db.executemany(sql, batch)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_list(names: list[str]) -> str:
    return "[" + ", ".join(_sql_string(name) for name in names) + "]"


#: read_json's columns: leaves the report groups on are JSON, so types are
#: checked in SQL exactly as the Python reader checks them.
_RAW_COLUMNS = {
    "status": "JSON",
    "dump": "JSON",
    "error": "JSON",
    "host": "JSON",
    "host_source": "JSON",
    "elapsed_s": "JSON",
    "crash_bucket": "STRUCT(bucket JSON)",
    "report": "STRUCT("
    "kho STRUCT(status JSON), "
    "chain STRUCT(line JSON, kexec_count JSON, previous_release JSON, "
    "current_release JSON, next STRUCT(release JSON)), "
    "crash STRUCT(live JSON, panic_reason JSON, build_id JSON), "
    "findings STRUCT(code JSON, severity JSON)[])",
}
_RAW_NAMES = {
    "status": "j_status",
    "dump": "j_dump",
    "error": "j_error",
    "host": "j_host",
    "host_source": "j_host_source",
    "elapsed_s": "j_elapsed",
    "crash_bucket": "j_bucket",
    "report": "j_report",
}


def _duckdb_load(files: list[Path], tmpdir: str | None) -> Any:
    import duckdb

    db = duckdb.connect(":memory:")
    spill = tempfile.mkdtemp(prefix="kho-fleet-", dir=tmpdir)
    try:
        db.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT_MB}MB'")
        db.execute(f"SET temp_directory = {_sql_string(spill)}")
        db.execute("SET threads = 2")
        db.execute("SET preserve_insertion_order = false")
        db.execute(
            "CREATE MACRO nullif_empty_list(l) AS "
            "CASE WHEN len(l) = 0 THEN NULL ELSE array_to_string(l, ',') END"
        )
        names = [n for n, _, _ in COLUMNS]
        db.execute(
            "CREATE TABLE records (filename VARCHAR, dirty BOOLEAN, "
            + ", ".join(f"{n} {t}" for n, t, _ in COLUMNS)
            + ")"
        )
        aliases = _aliases(files, spill)
        jsonl = [p for p in files if not _is_parquet(p)]
        parquet = [p for p in files if _is_parquet(p)]
        if jsonl:
            _duckdb_jsonl(db, jsonl, names, aliases)
        for path in parquet:
            try:
                # the flat schema's host is never a placeholder; a file from
                # elsewhere may still carry one
                unset = ", ".join(_sql_string(h) for h in UNSET_HOSTS)
                columns = [
                    f"CASE WHEN host IN ({unset}) THEN NULL ELSE host END"
                    if n == "host"
                    else n
                    for n in names
                ]
                db.execute(
                    f"INSERT INTO records SELECT {_sql_string(aliases[path])}, "
                    "false, "
                    + ", ".join(columns)
                    + f" FROM read_parquet({_sql_string(aliases[path])})"
                )
            except duckdb.Error as e:
                raise FleetError(
                    f"{path}: not a kho-triage Parquet file: {_first_line(e)}"
                ) from None
    except BaseException:
        db.close()
        _remove_later(spill)
        raise
    return db


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


#: Characters DuckDB's readers take as a glob in a file name.
_GLOB_CHARS = frozenset("*?[]{}")


def _aliases(files: list[Path], spill: str) -> dict[Path, str]:
    """The name DuckDB reads each file by: its own, or, when that is not
    UTF-8 or holds glob characters, a symbolic link in ``spill``."""
    aliases = {}
    for n, path in enumerate(files):
        name = str(path)
        try:
            name.encode("utf-8")
            safe = not _GLOB_CHARS & set(name)
        except UnicodeEncodeError:
            safe = False
        if not safe:
            name = os.path.join(spill, f"input-{n}{path.suffix.lower()}")
            os.symlink(os.path.abspath(path), name)
        aliases[path] = name
    return aliases


def _duckdb_jsonl(
    db: Any, files: list[Path], names: list[str], aliases: dict[Path, str]
) -> None:
    import duckdb

    columns = (
        "{"
        + ", ".join(
            f"{_sql_string(k)}: {_sql_string(v)}" for k, v in _RAW_COLUMNS.items()
        )
        + "}"
    )
    raw = (
        "SELECT filename, "
        + ", ".join(f"{k} AS {v}" for k, v in _RAW_NAMES.items())
        + f" FROM read_json({_sql_list([aliases[p] for p in files])},"
        " format = 'newline_delimited',"
        f" columns = {columns}, ignore_errors = true, filename = true,"
        f" maximum_object_size = 16777216)"
    )
    flatten = load_queries()["duckdb_flatten_jsonl"]
    try:
        db.execute(
            f"INSERT INTO records WITH raw AS ({raw}) "
            + flatten.replace("WITH typed AS", ", typed AS", 1)
        )
    except (duckdb.InvalidInputException, duckdb.OutOfMemoryException):
        # A file DuckDB's reader refuses as a whole (a line over its size
        # limit, a tail of NULs): every file goes through the Python reader,
        # whole (no row of DuckDB's is left to compare a tail with).
        db.execute("DELETE FROM records")
        dirty, whole = [aliases[p] for p in files], True
    else:
        dirty = [
            row[0]
            for row in db.execute(
                "SELECT DISTINCT filename FROM records WHERE dirty"
            ).fetchall()
        ]
        whole = False
    by_name = {aliases[p]: p for p in files}
    for name in dirty:
        path = by_name.get(name, Path(name))
        if not whole and _name_tail_lines(db, name, path, names):
            continue
        db.execute("DELETE FROM records WHERE filename = ?", [name])
        with open(path, "rb") as stream:
            rows = (
                {"filename": name, "dirty": False, **row}
                for row in for_each_jsonl_row(path, stream)
            )
            _insert_duckdb(db, rows, names)


#: How far from the end of a file the bad lines are looked for first.
_TAIL_BYTES = 64 << 20


def _name_tail_lines(db: Any, name: str, path: Path, names: list[str]) -> bool:
    """Name the lines DuckDB could not take when they are the last lines of
    the file (a run killed mid-write): the Python reader reads only those,
    and they must be the same lines (as many, with the same ``dump``s).
    False when they are not: then the whole file is read again."""
    dirty = db.execute(
        "SELECT dump FROM records WHERE filename = ? AND dirty", [name]
    ).fetchall()
    if not dirty:
        return False
    tail = _last_lines(path, len(dirty))
    if tail is None:
        return False
    rows = []
    for number, line in tail:
        (row,) = for_each_jsonl_row(path, [line], first=number)
        if (
            row["status"] != UNREADABLE
            and row["dump"] != f"{display_path(path)}:{number}"
        ):
            return False  # a record to Python: DuckDB's bad lines are elsewhere
        rows.append({"filename": name, "dirty": False, **row})
    ours = sorted(_record_dump(line) or "" for _, line in tail)
    if ours != sorted(dump or "" for (dump,) in dirty):
        return False
    db.execute("DELETE FROM records WHERE filename = ? AND dirty", [name])
    _insert_duckdb(db, rows, names)
    return True


def _record_dump(line: bytes) -> str | None:
    try:
        record = parse_json_line(line)
    except ValueError:
        return None
    dump = record.get("dump") if isinstance(record, dict) else None
    return dump if isinstance(dump, str) else None


def _last_lines(path: Path, count: int) -> list[tuple[int, bytes]] | None:
    """The last ``count`` non-blank lines of a file with their numbers (as
    ``enumerate`` over the file counts them), or None if they are not all
    within :data:`_TAIL_BYTES` of the end."""
    size = path.stat().st_size
    newlines = 0
    last = b""
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
        total = newlines + (1 if size and last != b"\n" else 0)
        start = max(0, size - _TAIL_BYTES)
        f.seek(start)
        lines = f.read().split(b"\n")
    if last == b"\n":
        lines.pop()
    first = 0 if start == 0 else 1  # a partial line at the cut
    found: list[tuple[int, bytes]] = []
    number = total
    for index in range(len(lines) - 1, first - 1, -1):
        if len(found) == count:
            break
        if lines[index].strip():
            found.append((number, lines[index] + b"\n"))
        number -= 1
    return found[::-1] if len(found) == count else None


def _insert_duckdb(db: Any, rows: Iterable[dict[str, Any]], names: list[str]) -> None:
    """Rows from the Python reader into DuckDB, through a flat JSON Lines
    file that DuckDB reads in bulk (row-by-row inserts are slow)."""
    import json

    cols = {"filename": "VARCHAR", "dirty": "BOOLEAN"}
    cols.update((n, t) for n, t, _ in COLUMNS)
    with tempfile.NamedTemporaryFile(
        "w", prefix="kho-fleet-", suffix=".jsonl", dir=_spill_dir(db)
    ) as flat:
        for row in rows:
            flat.write(json.dumps(row) + "\n")
        flat.flush()
        spec = (
            "{"
            + ", ".join(f"{_sql_string(n)}: {_sql_string(t)}" for n, t in cols.items())
            + "}"
        )
        db.execute(
            f"INSERT INTO records SELECT {', '.join(cols)} FROM read_json("
            f"{_sql_string(flat.name)}, format = 'newline_delimited',"
            f" columns = {spec}, maximum_object_size = 16777216)"
        )


def _remove_later(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _spill_dir(db: Any) -> str:
    row = db.execute("SELECT current_setting('temp_directory')").fetchone()
    return str(row[0])


_TITLES = {
    "by_transition": ("By kexec transition (previous -> crashed)", ("transition",)),
    "by_kexec_count": ("By kexec_count", ("kexec_count",)),
    "by_panic": ("By panic signature", ("panic",)),
    "by_transition_and_panic": (
        "By transition and panic signature",
        ("transition", "panic"),
    ),
    "by_crash_bucket": ("By crash bucket (top frames)", ("bucket",)),
    "by_transition_and_crash_bucket": (
        "By transition and crash bucket",
        ("transition", "bucket"),
    ),
    "by_error_findings": ("By error findings", ("findings",)),
    "by_transition_with_error_findings": (
        "Transitions of dumps with error findings",
        ("transition",),
    ),
}


def _chain_text(chain: list[tuple[int, list[str]]]) -> str:
    return (
        " -> ".join(
            f"#{position} {'|'.join(escape_text(r) for r in releases)}"
            for position, releases in chain
        )
        or "(no kexec_count)"
    )


def render_fleet(report: FleetReport, out: IO[str], hosts: bool = False) -> None:
    """The report as text; every string from a record is escaped.  Long
    lists (hosts, failed) are streamed, one line each."""
    from tabulate import tabulate

    failed = report.dumps - report.ok
    out.write(f"{report.dumps} dumps: {report.ok} analysed, {failed} failed\n")
    for name, (title, labels) in _TITLES.items():
        rows = [
            (*tuple(escape_text(str(v)) for v in row[:-1]), row[-1])
            for row in report.tables[name]
        ]
        if not rows and "error_findings" in name:
            continue
        out.write(f"\n{title}\n")
        out.write(tabulate(rows, headers=(*labels, "crashes")) + "\n")
    out.write(
        "\nPer host: kernels by kexec_count, pieced together from its dumps "
        "('a|b': dumps from different boot chains)\n"
    )
    for entry in report.hosts():
        out.write(
            f"{escape_text(entry.host)}: {entry.crashes} dump(s): "
            f"{_chain_text(entry.chain)}\n"
        )
    if report.unknown_host:
        out.write(
            f"(host unknown): {report.unknown_host} dump(s), not pieced together "
            "(no nodename and no kdump <host>-<date> directory)\n"
        )
    if hosts:
        out.write("\nDumps per host, by kexec_count\n")
        for host, count, previous, release, dump in report.host_crashes():
            out.write(
                f"{escape_text(host)}  #{'?' if count is None else count}  "
                f"{escape_text(previous or '-')} -> {escape_text(release or '?')}  "
                f"{escape_text(dump)}\n"
            )
    if failed:
        out.write("\nFailed (dump, status, reason)\n")
        for dump, status, error in report.failed():
            out.write(
                f"{escape_text(dump)}  {escape_text(status)}  "
                f"{escape_text(error or '')}\n"
            )


def _json_array(out: IO[str], items: Iterable[Any]) -> None:
    out.write("[")
    for n, item in enumerate(items):
        out.write((",\n    " if n else "\n    ") + json.dumps(item))
    out.write("\n  ]")


def write_fleet_json(report: FleetReport, out: IO[str], hosts: bool = False) -> None:
    """The report as JSON (schema ``kho-drgn/fleet-report/2``), streamed."""
    head = {
        "schema": "kho-drgn/fleet-report/2",
        "engine": report.engine,
        "dumps": report.dumps,
        "ok": report.ok,
        "unknown_host": report.unknown_host,
        "by_transition": dict(report.tables["by_transition"]),
        "by_kexec_count": dict(report.tables["by_kexec_count"]),
        "by_panic": dict(report.tables["by_panic"]),
        "by_transition_and_panic": [
            {"transition": t, "panic": p, "crashes": n}
            for t, p, n in report.tables["by_transition_and_panic"]
        ],
        "by_crash_bucket": dict(report.tables["by_crash_bucket"]),
        "by_transition_and_crash_bucket": [
            {"transition": t, "bucket": b, "crashes": n}
            for t, b, n in report.tables["by_transition_and_crash_bucket"]
        ],
        "by_error_findings": dict(report.tables["by_error_findings"]),
        "by_transition_with_error_findings": dict(
            report.tables["by_transition_with_error_findings"]
        ),
    }
    out.write(json.dumps(head, indent=2)[:-2] + ",\n")
    out.write('  "hosts": ')
    _json_array(
        out,
        (
            {
                "host": e.host,
                "dumps": e.crashes,
                "chain": [
                    {"kexec_count": position, "releases": releases}
                    for position, releases in e.chain
                ],
            }
            for e in report.hosts()
        ),
    )
    if hosts:
        out.write(',\n  "host_dumps": ')
        _json_array(
            out,
            (
                {
                    "host": host,
                    "kexec_count": count,
                    "previous_release": previous,
                    "release": release,
                    "dump": dump,
                }
                for host, count, previous, release, dump in report.host_crashes()
            ),
        )
    out.write(',\n  "failed": ')
    _json_array(
        out,
        (
            {"dump": dump, "status": status, "error": error}
            for dump, status, error in report.failed()
        ),
    )
    out.write("\n}\n")
