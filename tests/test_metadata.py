"""kexec-metadata decoding without drgn: valid blobs and every bad input."""

from __future__ import annotations

from khobuild import metadata_blob

from kho_drgn.abi import KEXEC_METADATA_V1, MetadataLayout
from kho_drgn.metadata import decode_kexec_metadata


def codes(md: object) -> list[str]:
    return [f.code for f in md.findings]  # type: ignore[attr-defined]


def test_valid_v1() -> None:
    md = decode_kexec_metadata(metadata_blob(), where="incoming")
    assert md.valid
    assert (md.version, md.previous_release, md.kexec_count) == (1, "7.2.13-kho-a", 2)
    assert md.blob_size == 73 and md.findings == []


def test_big_endian_target() -> None:
    md = decode_kexec_metadata(metadata_blob(count=7, byteorder="big"), "big")
    assert (md.version, md.kexec_count) == (1, 7)


def test_release_of_64_chars_fits() -> None:
    release = b"r" * 64
    md = decode_kexec_metadata(metadata_blob(release=release))
    assert md.previous_release == "r" * 64 and md.valid


def test_blob_smaller_than_version_field() -> None:
    md = decode_kexec_metadata(b"\x01\x00")
    assert codes(md) == ["metadata.too-small"]
    assert md.version is None and not md.valid


def test_version_zero_and_two_are_unknown() -> None:
    for version in (0, 2, 0xFFFFFFFF):
        md = decode_kexec_metadata(metadata_blob(version=version))
        assert codes(md) == ["metadata.unknown-version"]
        assert md.version == version
        assert md.previous_release is None and md.kexec_count is None
        assert md.raw == metadata_blob(version=version)  # raw shown, not guessed
        assert str(version) in md.findings[0].message


def test_blob_too_small_for_v1() -> None:
    md = decode_kexec_metadata(metadata_blob()[:50])
    assert codes(md) == ["metadata.too-small-for-version"]
    assert md.version == 1 and md.previous_release is None


def test_declared_size_smaller_than_bytes_read() -> None:
    md = decode_kexec_metadata(metadata_blob(), blob_size=40)
    assert codes(md) == ["metadata.too-small-for-version"]


def test_unterminated_release() -> None:
    md = decode_kexec_metadata(metadata_blob(release_field=b"x" * 65))
    assert codes(md) == ["metadata.release-unterminated"]
    assert md.previous_release is None
    assert md.kexec_count == 2  # the rest of the struct is still read
    assert "xxxx" in md.findings[0].message


def test_release_not_utf8() -> None:
    md = decode_kexec_metadata(metadata_blob(release=b"7.2\xff\xfe-bad"))
    assert codes(md) == ["metadata.release-not-utf8"]
    assert md.previous_release is None
    assert "\\xff" in md.findings[0].message


def test_oversized_blob_is_reported_but_decoded() -> None:
    blob = metadata_blob() + bytes(100)
    md = decode_kexec_metadata(blob)
    assert codes(md) == ["metadata.oversized"]
    assert md.valid and md.previous_release == "7.2.13-kho-a"


def test_dwarf_layout_is_used() -> None:
    # A layout with different offsets (as DWARF could describe) is honoured.
    layout = MetadataLayout(
        size=80,
        version_offset=0,
        release_offset=8,
        release_size=65,
        count_offset=76,
        source="dwarf",
    )
    blob = bytearray(80)
    blob[0:4] = (1).to_bytes(4, "little")
    blob[8:12] = b"abc\0"
    blob[76:80] = (9).to_bytes(4, "little")
    md = decode_kexec_metadata(bytes(blob), layout=layout)
    assert (md.previous_release, md.kexec_count, md.layout_source) == (
        "abc",
        9,
        "dwarf",
    )
    assert KEXEC_METADATA_V1.size == 73


def test_panic_message_and_reason() -> None:
    from kho_drgn.log import find_panic_message, panic_reason

    lines = [
        "boot",
        "Oops: 0002 [#1] SMP",
        "Kernel panic - not syncing: Fatal exception",
    ]
    assert find_panic_message(lines) == "Kernel panic - not syncing: Fatal exception"
    assert panic_reason(find_panic_message(lines)) == "Fatal exception"
    assert find_panic_message(["BUG: kernel NULL pointer dereference, address: 0"]) == (
        "BUG: kernel NULL pointer dereference, address: 0"
    )
    assert find_panic_message(["all quiet"]) is None


def test_finding_messages_escape_control_bytes() -> None:
    """Raw release bytes quoted in a finding carry no control byte: ESC, BEL,
    CR and non-ASCII are C escapes (the text view prints messages as is)."""
    from kho_drgn.metadata import decode_c_string

    for raw in (b"7.2\x1b[2J\x07\r" + b"X" * 60, b"7.2\x1b]0;t\x07\xff\0"):
        value, findings = decode_c_string(raw, "previous_release", "incoming")
        assert value is None and len(findings) == 1
        message = findings[0].message
        assert message.isascii() and message.isprintable(), message
        assert "7.2\\x1b" in message
