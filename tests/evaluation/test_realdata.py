"""Tests of embedder/evaluation/realdata.py on the real CropHarvest cube (17 x 17 px, 12 monthly steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from embedder.checkpoints import save_checkpoint
from embedder.config import FusionConfig, ModelConfig
from embedder.evaluation.realdata import (
    CROPHARVEST_TIF,
    RealDataError,
    cli_main,
    composite_gaps,
    embed_cropharvest,
)
from embedder.models.fusion import FusionModel
from embedder.models.modality import ModalityAutoencoder
from embedder.sensors import S1, S2

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.skipif(not CROPHARVEST_TIF.is_file(), reason="realdata CropHarvest tif not present"),
]


def _model(seed: int = 0) -> FusionModel:
    torch.manual_seed(seed)
    aes = {s.name: ModalityAutoencoder(s, cfg=ModelConfig.small()) for s in (S1, S2)}
    return FusionModel(aes, cfg=FusionConfig.small())


def test_composite_rule_scales_long_windows_into_the_day_table() -> None:
    gaps = np.array([[30.0] * 10, [5.0] * 10, [10, 10, 10, 10, 10, 40, 40, 40, 40, 40]])
    out = composite_gaps(gaps)
    assert out[0] == pytest.approx([19.9] * 10)  # 300 days -> 199 (< 200), evenly spaced as the input
    assert out[1] == pytest.approx([5.0] * 10)  # a window inside the table is left alone
    assert out[2].sum() == pytest.approx(199.0) and out[2][5] / out[2][0] == pytest.approx(4.0)


@pytest.mark.parametrize("rule", ["composite", "gap_rule"])
def test_real_cube_embeds_finite_under_either_rule(rule: str) -> None:
    res = embed_cropharvest(CROPHARVEST_TIF, model=_model(), rule=rule)  # type: ignore[arg-type]
    assert res.n_embeddings == 2 * 3 * 3  # 2 dates with 5 on each side x centre 3 x 3 px
    assert res.all_finite and res.rule == rule
    if rule == "composite":  # the 30-day composites keep their spacing, scaled into the table
        assert res.gap_rule_share == 0.0 and res.gaps_days == pytest.approx([19.9] * 10, abs=0.02)
    else:  # 10 gaps x 30 days >= 200: SPEC 7's 1-day steps
        assert res.gap_rule_share == 1.0 and res.gaps_days == [1.0] * 10
    for name in ("s1", "s2"):
        assert 0.0 < res.floors[name]["frame_mean"] < 1.0 and 0.0 <= res.floors[name]["temporal_mean"] < 1.0
    assert len(res.embedding_mean) == 7 and all(np.isfinite(res.embedding_std))
    for name in ("s1", "s2"):
        assert 0.0 < res.recon_mae[name] < 1.0 and 0.0 < res.baseline_mae[name] < 1.0
        assert np.isfinite(res.recon_centre_mae[name])


def test_cli_writes_json_and_rejects_missing_file(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "f.pt", _model(1))
    assert cli_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "r.json")]) == 0
    assert '"all_finite": true' in (tmp_path / "r.json").read_text()
    with pytest.raises(RealDataError, match="no CropHarvest file"):
        embed_cropharvest(tmp_path / "missing.tif", model=_model())
