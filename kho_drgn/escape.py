"""Escaping of strings that came from a target, before they reach a terminal.

A dump is data from a failing, possibly hostile machine: a release string, a
subtree or file name, a log line may carry ESC, BEL, CR or Unicode format
characters that would move the cursor, retitle the terminal or forge the line
above.  Every such string goes through :func:`escape_text` on its way to text
output.  JSON keeps the decoded string itself (``json`` escapes control
characters on its own).

Escapes follow C and drgn's :func:`~drgn.helpers.common.format.escape_ascii_string`
(``\\n``, ``\\t``, ``\\x1b``), with ``\\uNNNN`` for non-printable characters past
ASCII and ``\\\\`` for a backslash, so an escaped string never reads as
another one.
"""

from __future__ import annotations

from drgn.helpers.common.format import escape_ascii_character

__all__ = ("escape_bytes", "escape_text")


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x80:
        return escape_ascii_character(code, escape_backslash=True)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_text(value: str) -> str:
    """``value`` with every non-printable character and backslash escaped.

    Printable characters, non-ASCII ones included, are kept; control
    characters (C0, DEL, C1), format characters such as bidi overrides,
    separators other than the space, surrogates and unassigned code points
    are written as escapes.
    """
    if value.isprintable() and "\\" not in value:
        return value
    return "".join(
        ch if ch.isprintable() and ch != "\\" else _escape_char(ch) for ch in value
    )


def escape_bytes(data: bytes) -> str:
    """Raw bytes for text output: printable ASCII kept, the rest escaped."""
    return "".join(escape_ascii_character(b, escape_backslash=True) for b in data)
