"""The README's usage examples run as written (on the sample region, offline) and return data."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from embedder.cli import main as cli

README = Path(__file__).resolve().parent.parent / "README.md"


def _usage_commands() -> dict[str, list[str]]:
    """The ``embedder ...`` lines of the README's Usage block, by sub-command, comments stripped."""
    text = README.read_text()
    block = text.split("## Usage", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    out: dict[str, list[str]] = {}
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("embedder "):
            words = shlex.split(line)[1:]
            out.setdefault(words[0], words)
    return out


def test_the_usage_block_names_the_commands_a_user_starts_with() -> None:
    assert {"sample-region", "cube", "plan", "probe", "serve", "verify"} <= set(_usage_commands())


def test_sample_region_then_cube_as_written_returns_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cmds = _usage_commands()
    monkeypatch.chdir(tmp_path)  # OUT is a folder the README's first command writes
    assert cli(cmds["sample-region"]) == 0
    assert (tmp_path / "OUT" / "catalog.json").is_file()
    capsys.readouterr()
    assert cli(cmds["cube"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    usable = re.search(r"(\d+) dates, (\d+) usable", out)
    assert usable and int(usable.group(2)) > 0, out  # the example's bbox and period hold real pixels


def test_plan_as_written_prices_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    words = [w for w in shlex.split(
        next(line for line in README.read_text().splitlines() if line.startswith("embedder plan europe")).split("#")[0]
    )][1:]  # fmt: skip
    assert cli(words) == 0
    out = capsys.readouterr().out
    hours = re.search(r"^GPU-hours\s+([\d,.]+)", out, re.M)
    cost = re.search(r"^cost\s+([\d,.]+) at ([\d.]+) per GPU-hour", out, re.M)
    assert hours and float(hours.group(1).replace(",", "")) > 0, out
    assert cost and float(cost.group(1).replace(",", "")) > 0 and float(cost.group(2)) > 0, out  # priced
