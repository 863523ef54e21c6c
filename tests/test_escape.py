"""The one escaping function for target strings on their way to a terminal."""

from __future__ import annotations

import pytest

from kho_drgn.escape import escape_bytes, escape_text


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("7.2.13-kho-b", "7.2.13-kho-b"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("bell\x07cr\rnl\n", "bell\\acr\\rnl\\n"),
        ("del\x7f c1\x85 csi\x9b", "del\\x7f c1\\x85 csi\\x9b"),
        ("rtl\u202eevil", "rtl\\u202eevil"),
        ("back\\slash", "back\\\\slash"),
        ("caf\u00e9 \u4e2d", "caf\u00e9 \u4e2d"),
    ],
)
def test_escape_text(raw: str, escaped: str) -> None:
    assert escape_text(raw) == escaped


def test_escape_text_leaves_no_control_character() -> None:
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    assert escape_text(every).isprintable()


def test_escape_bytes() -> None:
    assert escape_bytes(b"ok\x1b\xff\\") == "ok\\x1b\\xff\\\\"
