"""The dense-consistent encoder: dense tile tokens equal per-window tokens (issue 9)."""

import dataclasses

import pytest
import torch

from embedder.config import ConfigError, ModelConfig, from_dict, to_dict
from embedder.models.dense import DenseFrameEncoder, dense_macs_per_pixel
from embedder.models.modality import ModalityAutoencoder
from embedder.sensors import S1, S2, WINDOW_PX


def _dense_cfg(base: ModelConfig | None = None) -> ModelConfig:
    return dataclasses.replace(base if base is not None else ModelConfig.small(), encoder="dense")


def _enc(ae: ModalityAutoencoder) -> DenseFrameEncoder:
    assert isinstance(ae.frame_encoder, DenseFrameEncoder)
    return ae.frame_encoder


def _per_window(ae: ModalityAutoencoder, tile: torch.Tensor) -> torch.Tensor:
    """Reference: every pixel's own 15 x 15 window through ``encode_frames``: ``[C, H, W] -> [h, w, d]``."""
    wins = tile.unfold(1, WINDOW_PX, 1).unfold(2, WINDOW_PX, 1)  # [C, h, w, 15, 15]
    h, w = wins.shape[1:3]
    frames = wins.permute(1, 2, 0, 3, 4).reshape(-1, tile.shape[0], WINDOW_PX, WINDOW_PX)
    return ae.encode_frames(frames).reshape(h, w, -1)


@pytest.mark.parametrize(
    ("cfg", "sensor", "shape", "rows"),
    [
        (_dense_cfg(), S2, (23, 19), 3),  # small preset, several row strips
        (_dense_cfg(), S1, (16, 30), 64),
        (_dense_cfg(ModelConfig()), S2, (19, 18), 2),  # paper widths
        (_dense_cfg(ModelConfig.cpu()), S2, (17, 20), 64),  # CPU preset: standardised bands
    ],
)
def test_dense_tile_equals_per_window(cfg: ModelConfig, sensor, shape: tuple[int, int], rows: int) -> None:
    torch.manual_seed(0)
    ae = ModalityAutoencoder(sensor, cfg=cfg).eval()
    if cfg.standardize:
        ae.set_band_stats(
            torch.linspace(0.1, 0.3, sensor.n_channels), torch.linspace(0.05, 0.2, sensor.n_channels)
        )
    tile = torch.rand(sensor.n_channels, *shape) * 2 - 0.5  # [C, H, W]
    with torch.no_grad():
        dense = _enc(ae).encode_dense(tile, rows_per_chunk=rows)  # [h, w, d]
        ref = _per_window(ae, tile)
    assert dense.shape == (shape[0] - 14, shape[1] - 14, cfg.d_model)
    # every pixel, interior and edge (first/last row and column) alike
    torch.testing.assert_close(dense, ref, atol=1e-5, rtol=0)
    for r, c in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        torch.testing.assert_close(dense[r, c], ref[r, c], atol=1e-5, rtol=0)


def test_token_depends_only_on_its_window() -> None:
    torch.manual_seed(1)
    ae = ModalityAutoencoder(S2, cfg=_dense_cfg()).eval()
    tile = torch.rand(10, 25, 25)
    with torch.no_grad():
        before = _enc(ae).encode_dense(tile)  # [11, 11, d]
        tile[:, 0, 0] += 5.0  # only windows whose top-left corner is (0, 0) contain this pixel
        after = _enc(ae).encode_dense(tile)
    changed = (after - before).abs().amax(dim=-1) > 0  # [11, 11]
    assert changed[0, 0]
    changed[0, 0] = False
    assert not changed.any()


def test_dense_encoder_trains_and_keeps_the_decoder() -> None:
    torch.manual_seed(2)
    paper = ModalityAutoencoder(S2, cfg=ModelConfig.small())
    ae = ModalityAutoencoder(S2, cfg=_dense_cfg())
    assert isinstance(ae.frame_encoder, DenseFrameEncoder)
    assert type(ae.frame_decoder) is type(paper.frame_decoder)
    x = torch.rand(2, 11, 10, 15, 15)
    gaps = torch.full((2, 10), 5.0)
    x_hat, z = ae(x, gaps)
    assert x_hat.shape == x.shape and z.shape == (2, S2.bottleneck_dim)
    (x_hat - x).abs().mean().backward()
    stem = _enc(ae).stem[0]
    assert isinstance(stem, torch.nn.Conv2d)
    assert stem.weight.grad is not None and stem.weight.grad.abs().sum() > 0


def test_config_selects_encoder_and_round_trips() -> None:
    cfg = from_dict(ModelConfig, {"encoder": "dense", "d_model": 32, "n_heads": 2})
    assert cfg.encoder == "dense" and from_dict(ModelConfig, to_dict(cfg)) == cfg
    assert ModelConfig().encoder == "paper"
    with pytest.raises(ConfigError, match="encoder"):
        from_dict(ModelConfig, {"encoder": "sparse"})


def test_kernels_that_do_not_fit_the_window_are_rejected() -> None:
    with pytest.raises(ConfigError, match="multiscale_kernels"):
        ModalityAutoencoder(S2, cfg=dataclasses.replace(_dense_cfg(), multiscale_kernels=(3, 11)))


def test_encode_dense_rejects_small_tiles() -> None:
    ae = ModalityAutoencoder(S2, cfg=_dense_cfg()).eval()
    with pytest.raises(ValueError, match="halo"):
        _enc(ae).encode_dense(torch.zeros(10, 14, 20))


def test_dense_macs_per_pixel_at_paper_size() -> None:
    macs = dense_macs_per_pixel(_enc(ModalityAutoencoder(S2, cfg=_dense_cfg(ModelConfig()))))
    # the multi-scale convolutions alone: 149 * 149 * (9 + 49)
    assert 149 * 149 * 58 < macs < 2_000_000


def test_dense_job_configs_differ_from_the_paper_ones_only_in_the_encoder() -> None:
    from pathlib import Path

    from embedder.config import load_config
    from ray_jobs.config import TrainModalityJobConfig

    configs = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs"
    for folder in (configs, configs / "smoke"):
        for sensor in ("s1", "s2"):
            paper = load_config(TrainModalityJobConfig, folder / f"train_modality_{sensor}.yaml")
            dense = load_config(TrainModalityJobConfig, folder / f"train_modality_{sensor}_dense.yaml")
            assert paper.model.encoder == "paper" and dense.model.encoder == "dense"
            assert dense.model == dataclasses.replace(paper.model, encoder="dense")
            assert dense.train == paper.train and dense.sensor == paper.sensor
            assert dense.run.name == f"{paper.run.name}-dense"
