"""The embedding job refuses bad checkpoints and configs by name, before Ray starts or a store is written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from embedder.checkpoints import save_checkpoint
from embedder.config import ModelConfig
from embedder.models.modality import ModalityAutoencoder
from embedder.sensors import S2
from ray_jobs.embed import main


def _config(tmp_path: Path, checkpoint: Path, **extra: object) -> Path:
    cfg = {
        "catalog": str(tmp_path / "catalog.json"), "store": str(tmp_path / "store.zarr"),
        "region": "8.49,47.10,8.51,47.12", "start": "2022-01-01", "end": "2022-12-31",
        "checkpoint": str(checkpoint), **extra,
    }  # fmt: skip
    path = tmp_path / "embed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("case", ["missing", "garbage", "stage1", "bad-config"])
def test_refused_with_a_named_error_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    ckpt = tmp_path / "fusion.pt"
    if case == "garbage":
        ckpt.write_bytes(b"not a checkpoint")
    elif case == "stage1":
        save_checkpoint(ckpt, ModalityAutoencoder(S2, cfg=ModelConfig.small()))
    extra = {"pixel_batch": "many"} if case == "bad-config" else {}
    assert main(["--config", str(_config(tmp_path, ckpt, **extra))]) == 2
    err = capsys.readouterr().err
    expected = {
        "missing": r"FileNotFoundError: checkpoint .*fusion\.pt' does not exist",
        "garbage": r"CheckpointMismatchError: .*fusion\.pt' is not a readable checkpoint",
        "stage1": r"CheckpointMismatchError: .*holds a 'modality' model but a 'fusion' model was asked for",
        "bad-config": r"ConfigError: .*pixel_batch",
    }[case]
    assert err.startswith("[embed] refused: ") and "Traceback" not in err
    assert re.search(expected, err), err
    assert not (tmp_path / "store.zarr").exists()
