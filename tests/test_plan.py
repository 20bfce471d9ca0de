import json
import math

import pytest

from embedder.grid import GridError, tiles_for_region, work_units
from embedder.plan import (
    BYTES_PER_PIXEL_DATE,
    DEFAULT_PRICE_PER_GPU_HOUR,
    ENCODERS,
    PlanError,
    cli_main,
    count_tiles,
    measure_flops,
    plan_run,
)
from embedder.sensors import WINDOW_DATES

BBOX = (11.0, 46.0, 11.6, 46.4)  # ~46 x 44 km in the Alps, UTM 32N


def test_paper_model_flops_match_the_budget() -> None:
    f = measure_flops("paper")
    # about 1.2 GFLOP per pixel-date with the frame cache, about 11x less than re-encoding every window
    assert 1.0e9 < f.fast_per_pixel_date < 1.5e9
    assert 10.0 < f.naive_over_fast < WINDOW_DATES
    assert (
        set(f.encode_frames) == {"s1", "s2"} and f.fuse > 0 and all(v > 0 for v in f.encode_tokens.values())
    )
    assert f.naive_per_pixel_date == pytest.approx(
        WINDOW_DATES * sum(f.encode_frames.values()) + sum(f.encode_tokens.values()) + f.fuse
    )
    small = measure_flops("small")
    assert small.fast_per_pixel_date < f.fast_per_pixel_date / 100


def test_dense_encoder_flops_are_measured_and_far_below_paper() -> None:
    paper, dense = measure_flops("paper"), measure_flops("paper", "dense")
    assert paper.encoder == "paper" and paper.tile_px is None
    assert dense.encoder == "dense" and dense.tile_px == 512
    # the dense frame pass (about 1.6 M multiply-adds per pixel, plus the halo) vs a 15 x 15 window each
    assert all(2e6 < v < 6e6 for v in dense.encode_frames.values())
    assert all(v > 100 * dense.encode_frames[k] for k, v in paper.encode_frames.items())
    # everything after the frame token is the same code for both encoders
    assert dense.encode_tokens == pytest.approx(paper.encode_tokens) and dense.fuse == pytest.approx(
        paper.fuse
    )
    ratio = paper.fast_per_pixel_date / dense.fast_per_pixel_date
    assert 20.0 < ratio < 60.0
    # the 7 px halo costs relatively more on a small tile
    small_tile = measure_flops("paper", "dense", tile_px=32)
    assert sum(small_tile.encode_frames.values()) > 1.2 * sum(dense.encode_frames.values())


def test_dense_count_on_meta_equals_the_cpu_count() -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from embedder.config import ModelConfig
    from embedder.models.dense import DenseFrameEncoder
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S2

    tile = 16
    ae = ModalityAutoencoder(
        S2, cfg=ModelConfig(encoder="dense", conv_channels=(8, 8, 8), d_model=32, n_heads=2)
    )
    frame = torch.rand(len(S2.bands), tile + 14, tile + 14)  # [C, H, W] on the CPU
    assert isinstance(ae.frame_encoder, DenseFrameEncoder)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        ae.frame_encoder.encode_dense(frame)
    counted = measure_flops("small", "dense", tile_px=tile)
    assert counted.encode_frames["s2"] == pytest.approx(fc.get_total_flops() / tile**2)


@pytest.mark.parametrize("region,tile_px", [(BBOX, 512), ((-1.0, 50.0, 1.0, 51.0), 256), ("sample", 32)])
def test_tile_count_equals_the_grid(region: object, tile_px: int) -> None:
    assert count_tiles(region, tile_px=tile_px) == len(tiles_for_region(region, tile_px=tile_px))


def test_plan_numbers_are_consistent() -> None:
    kw = dict(start="2021-01-01", end="2021-12-31", preset="small", usable_share=0.5, land_share=0.8)
    p = plan_run(BBOX, px_dates_per_s=1000.0, price_per_gpu_hour=2.0, **kw)  # type: ignore[arg-type]
    assert p.tiles == len(tiles_for_region(BBOX)) and p.units == len(
        work_units(BBOX, "2021-01-01", "2021-12-31")
    )
    assert 1800 < p.area_km2 < 2200 and p.land_km2 == pytest.approx(0.8 * p.area_km2)
    assert p.pixel_dates == pytest.approx(p.land_km2 * 1e4 * (365 / 365.25) * 73 * 0.5)
    assert p.gpu_hours == pytest.approx(p.pixel_dates / 1000.0 / 3600.0)
    assert p.cost == pytest.approx(2.0 * p.gpu_hours)
    assert p.bytes_stored == pytest.approx(p.pixel_dates * BYTES_PER_PIXEL_DATE)
    assert p.total_pflop == pytest.approx(p.pixel_dates * p.flop_per_pixel_date / 1e15)
    # context dates of the period make the per-pixel-date cost a little higher than one frame per date
    fast = measure_flops("small").fast_per_pixel_date
    assert fast < p.flop_per_pixel_date < 1.5 * fast

    # the rate from TFLOP/s: twice the utilisation halves the GPU-hours; two years double them
    a = plan_run(BBOX, gpu_tflops=30.0, utilisation=0.2, **kw)  # type: ignore[arg-type]
    b = plan_run(BBOX, gpu_tflops=30.0, utilisation=0.4, **kw)  # type: ignore[arg-type]
    assert a.px_dates_per_s == pytest.approx(30e12 * 0.2 / a.flop_per_pixel_date)
    assert b.gpu_hours == pytest.approx(a.gpu_hours / 2)
    two = plan_run(BBOX, gpu_tflops=30.0, utilisation=0.2, **{**kw, "end": "2022-12-31"})  # type: ignore[arg-type]
    assert two.pixel_dates == pytest.approx(2 * a.pixel_dates, rel=1e-3)
    assert two.units == len(work_units(BBOX, "2021-01-01", "2022-12-31"))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"px_dates_per_s": 100.0, "gpu_tflops": 30.0}, "exactly one"),
        ({}, "exactly one"),
        ({"px_dates_per_s": -5.0}, "px_dates_per_s = -5.0"),
        ({"px_dates_per_s": 100.0, "usable_share": 1.5}, "usable_share = 1.5"),
        ({"px_dates_per_s": 100.0, "land_share": 0.0}, "land_share = 0.0"),
        ({"gpu_tflops": 30.0, "utilisation": math.nan}, "utilisation = nan"),
        ({"px_dates_per_s": 100.0, "price_per_gpu_hour": -1.0}, "price_per_gpu_hour = -1.0"),
        ({"px_dates_per_s": 100.0, "preset": "huge"}, "preset 'huge'"),
        ({"px_dates_per_s": 100.0, "encoder": "sparse"}, "encoder 'sparse' is unknown"),
    ],
)
def test_bad_inputs_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(PlanError, match=match):
        plan_run(BBOX, start="2021-01-01", end="2021-12-31", **kwargs)  # type: ignore[arg-type]


def test_measure_flops_names_a_bad_encoder() -> None:
    with pytest.raises(PlanError, match="encoder 'Dense' is unknown; use one of \\['paper', 'dense'\\]"):
        measure_flops("small", "Dense")
    with pytest.raises(PlanError, match="tile_px = 0"):
        measure_flops("small", "dense", tile_px=0)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_plan_prices_both_encoders(encoder: str) -> None:
    kw = dict(start="2021-01-01", end="2021-12-31", preset="paper", usable_share=0.5, encoder=encoder)
    p = plan_run(BBOX, gpu_tflops=30.0, utilisation=0.35, price_per_gpu_hour=2.0, **kw)  # type: ignore[arg-type]
    assert p.encoder == encoder and p.by_encoder[0].encoder == encoder
    costs = {c.encoder: c for c in p.by_encoder}
    assert set(costs) == set(ENCODERS) and all(c.rate_source == "TFLOP/s" for c in costs.values())
    assert p.chosen.flop_per_pixel_date == pytest.approx(p.flop_per_pixel_date)
    # the run's GPU-hours, per 1,000 km2 of land and year, are the chosen encoder's line
    per_unit = p.gpu_hours * 1000.0 / (p.land_km2 * p.years)
    assert p.chosen.gpu_hours_per_1000km2_year == pytest.approx(per_unit)
    for c in costs.values():
        unit = 1000.0 * 1e4 * 73 * 0.5  # pixel-dates of 1,000 km2 for one year
        assert c.gpu_hours_per_1000km2_year == pytest.approx(
            unit * c.flop_per_pixel_date / (30e12 * 0.35) / 3600.0
        )
        assert c.cost_per_1000km2_year == pytest.approx(2.0 * c.gpu_hours_per_1000km2_year)
    # context dates: x~1.3 for paper (frames dominate), a few % for dense
    for e, lo, hi in (("paper", 1.15, 1.45), ("dense", 1.0, 1.1)):
        fast = measure_flops("paper", e).fast_per_pixel_date
        assert lo < costs[e].flop_per_pixel_date / fast < hi
    ratio = costs["paper"].gpu_hours_per_1000km2_year / costs["dense"].gpu_hours_per_1000km2_year
    assert 20.0 < ratio < 80.0
    text = p.summary()
    assert f"({encoder} encoder)" in text and f"{encoder} (chosen)" in text and "per 1,000 km2" in text


def test_measured_rate_belongs_to_the_chosen_encoder() -> None:
    kw = dict(start="2021-01-01", end="2021-12-31", preset="small", encoder="dense")
    p = plan_run(BBOX, px_dates_per_s=1000.0, **kw)  # type: ignore[arg-type]
    dense, paper = p.by_encoder
    assert (dense.encoder, dense.rate_source, dense.px_dates_per_s) == ("dense", "measured", 1000.0)
    assert paper.rate_source == "scaled by FLOPs"
    assert paper.px_dates_per_s == pytest.approx(
        1000.0 * dense.flop_per_pixel_date / paper.flop_per_pixel_date
    )
    assert p.gpu_hours == pytest.approx(p.pixel_dates / 1000.0 / 3600.0)
    text = p.summary()
    assert "scaled by the FLOP ratio" in text and "cost" not in text.split("per 1,000 km2 of land")[1]


def test_bad_region_and_dates() -> None:
    with pytest.raises(GridError, match="lat, lon"):
        plan_run((46.0, 11.0, 46.4, 95.0), start="2021-01-01", end="2021-12-31", px_dates_per_s=1.0)
    with pytest.raises(GridError, match="swap"):
        plan_run(BBOX, start="2021-12-31", end="2021-01-01", px_dates_per_s=1.0)


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["11.0,46.0,11.6,46.4", "--start", "2021-01-01", "--end", "2021-12-31", "--preset", "small"]
    assert cli_main([*args, "--px-dates-per-s", "500", "--price-per-gpu-hour", "1.5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["px_dates_per_s"] == 500 and doc["cost"] == pytest.approx(1.5 * doc["gpu_hours"])
    # without a price the CLI assumes the documented L4 list price, never a silent 0.00
    assert cli_main([*args, "--px-dates-per-s", "500", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["price_per_gpu_hour"] == DEFAULT_PRICE_PER_GPU_HOUR > 0 and doc["cost"] > 0
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "GPU-hours" in out and "pixel-dates" in out and "with frame cache" in out
    assert cli_main([*args, "--encoder", "dense", "--gpu-tflops", "30", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["encoder"] == "dense" and [c["encoder"] for c in doc["by_encoder"]] == ["dense", "paper"]
    with pytest.raises(SystemExit) as info:
        cli_main([*args, "--encoder", "sparse"])
    assert info.value.code == 2 and "invalid choice: 'sparse'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli_main([*args, "--usable-share", "2"])
    assert info.value.code == 2 and "usable_share = 2.0" in capsys.readouterr().err
