"""Internal errors: one escaped line and exit 4, or with KHO_DRGN_DEBUG=1 the
traceback (drgn takes ``--debug`` for one of its own options, so the script
cannot be given the flag through drgn)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from fixturedata import CONTRIB_SCRIPT, fixture_files, load_truth

from kho_drgn import cli, debugfs_cli


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom\x1b[2J")


def test_script_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "build_report", _boom)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    err = io.StringIO()
    assert cli.run(None, [], stdout=io.StringIO(), stderr=err) == cli.EXIT_INTERNAL  # type: ignore[arg-type]
    line = err.getvalue()
    assert "internal error: RuntimeError: boom\\x1b[2J" in line
    assert "KHO_DRGN_DEBUG=1" in line and "\x1b" not in line
    for value in ("1", "yes"):
        monkeypatch.setenv(cli.DEBUG_ENV, value)
        with pytest.raises(RuntimeError, match="boom"):
            cli.run(None, [], stdout=io.StringIO(), stderr=io.StringIO())  # type: ignore[arg-type]
    monkeypatch.setenv(cli.DEBUG_ENV, "0")
    assert cli.run(None, [], stderr=io.StringIO()) == cli.EXIT_INTERNAL  # type: ignore[arg-type]


def test_kho_debugfs_internal_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(debugfs_cli, "decode_debugfs", _boom)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert debugfs_cli.main(["--root", str(tmp_path)]) == cli.EXIT_INTERNAL
    assert "kho-debugfs: internal error: RuntimeError" in capsys.readouterr().err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(RuntimeError):
        debugfs_cli.main(["--root", str(tmp_path)])


@pytest.mark.fixtures
@pytest.mark.parametrize("debug", [False, True])
def test_env_reaches_the_script_and_command_through_drgn(debug: bool) -> None:
    """Under the real drgn: ``--debug`` after the script is taken by drgn;
    the environment variable reaches both the script and ``%kho``."""
    import os

    vmcore, vmlinux = fixture_files(load_truth("chain-aab"))
    env = {k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV}
    if debug:
        env[cli.DEBUG_ENV] = "1"
    patch = (
        "import kho_drgn.cli as c\n"
        "def boom(*a, **k): raise RuntimeError('boom')\n"
        "c.build_report = boom\n"
    )
    script = patch + f"exec(open({str(CONTRIB_SCRIPT)!r}).read())\n"
    command = patch + (
        "import sys\n"
        "from drgn.commands import CommandError, run_command\n"
        "try:\n"
        "    run_command(prog, 'kho')\n"
        "except CommandError as e:\n"  # as drgn's shell shows it
        "    sys.exit(f'CommandError: {e}')\n"
    )
    for code in (script, command):
        proc = subprocess.run(
            [sys.executable, "-m", "drgn", "--quiet", "-c", str(vmcore),
             "-s", str(vmlinux), "-e", code],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert proc.returncode != 0
        assert ("Traceback" in proc.stderr) == debug, proc.stderr
        assert "RuntimeError" in proc.stderr and "boom" in proc.stderr
