"""Tests of embedder/cli.py: dispatch, and named errors as one line instead of a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedder.cli import main


def test_usage_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0 and "usage: embedder COMMAND" in capsys.readouterr().out
    assert main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err


def test_named_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "no-store.zarr")
    assert main(["serve", missing]) == 1
    err = capsys.readouterr().err
    assert err.startswith("embedder serve: StoreError: no embedding store at") and "Traceback" not in err
    garbage = tmp_path / "g.pt"
    garbage.write_bytes(b"garbage")
    assert main(["real-data", "--checkpoint", str(garbage)]) == 1
    assert "CheckpointMismatchError: " in capsys.readouterr().err
    monkeypatch.setenv("EMBEDDER_TRACEBACK", "1")  # for debugging: the traceback comes back
    with pytest.raises(Exception, match="no embedding store"):
        main(["serve", missing])
