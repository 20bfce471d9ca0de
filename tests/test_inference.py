from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedder.data.testing import make_test_cube
from embedder.inference import (
    FLAG_CENTRE_FILLED,
    FLAG_GAP_RULE,
    FLAG_S1_MISSING,
    FLAG_VALID,
    HALO_DATES,
    fill_in_time,
    plan_windows,
    prepare_tile,
)
from embedder.sensors import PRIMARY_SENSOR


def test_fill_in_time_interpolates_and_extends_ends() -> None:
    v = np.full((6, 1, 1, 2), np.nan, np.float32)
    v[1, 0, 0, 0], v[4, 0, 0, 0] = 1.0, 4.0  # pixel 0: two observations
    out = fill_in_time(v)
    np.testing.assert_allclose(out[:, 0, 0, 0], [1, 1, 2, 3, 4, 4])
    assert np.isnan(out[:, 0, 0, 1]).all()  # never observed stays NaN for the next fallback


def test_fill_is_independent_of_other_pixels_and_keeps_valid_values() -> None:
    rng = np.random.default_rng(0)
    v = rng.random((8, 3, 4, 4)).astype(np.float32)
    v[rng.random(v.shape) < 0.3] = np.nan
    out = fill_in_time(v)
    ok = np.isfinite(v)
    np.testing.assert_array_equal(out[ok], v[ok])
    v2 = v.copy()
    v2[:, :, 0, 0] = 0.5  # changing one pixel must not change the others
    np.testing.assert_array_equal(fill_in_time(v2)[:, :, 1:, :], out[:, :, 1:, :])


def test_plan_targets_have_five_usable_dates_each_side() -> None:
    cube = make_test_cube(1, size_px=21, n_dates=30, unusable_dates=(3, 12))
    plan = plan_windows(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert 3 not in plan.usable and 12 not in plan.usable
    assert len(plan.targets) == len(plan.usable) - 2 * HALO_DATES
    assert plan.skipped_context == 2 * HALO_DATES
    np.testing.assert_array_equal(plan.windows[:, HALO_DATES], plan.targets)
    assert (np.diff(plan.windows, axis=1) == 1).all()  # consecutive usable dates
    days = cube["time"].values.astype("datetime64[D]").astype(np.int64)[plan.usable[plan.windows]]
    np.testing.assert_array_equal(plan.s2_gaps, np.diff(days, axis=1))


def test_period_limits_targets_but_context_comes_from_outside() -> None:
    cube = make_test_cube(2, size_px=21, n_dates=30)
    times = cube["time"].values.astype("datetime64[D]")
    plan = plan_windows(cube, start=times[12], end=times[14], halo_px=7)
    got = times[plan.usable[plan.targets]]
    np.testing.assert_array_equal(got, times[12:15])


def test_200_day_rule_gives_one_day_steps_and_flags() -> None:
    cube = make_test_cube(3, size_px=21, n_dates=24, revisit_days=25)
    tile = prepare_tile(cube, start="2021-01-01", end="2023-12-31", halo_px=7)
    assert tile.plan.gap_rule.all()  # 10 gaps x 25 days = 250 >= 200
    assert (tile.plan.s2_gaps == 1).all()
    assert (tile.flags & FLAG_GAP_RULE).all()


def test_flags_mark_filled_centres_and_valid() -> None:
    cube = make_test_cube(4, size_px=25, n_dates=20, cloud_frac=0.4)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert (tile.flags & FLAG_VALID).all()
    s2 = cube["s2"].values[tile.plan.usable[tile.plan.targets]][:, :, 7:-7, 7:-7]
    missing = ~np.isfinite(s2).all(axis=1)
    np.testing.assert_array_equal((tile.flags & FLAG_CENTRE_FILLED) > 0, missing)
    for frames in tile.frames.values():
        assert np.isfinite(frames).all()


def test_usability_counts_interior_pixels_only() -> None:
    cube = make_test_cube(5, size_px=25, n_dates=14, cloud_frac=0.0)
    s2 = cube["s2"].values.copy()
    s2[6, :, 7:-7, 7:-7] = np.nan  # interior fully clouded, halo clear
    cube["s2"].values[:] = s2
    plan = plan_windows(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert 6 not in plan.usable
    share_needed = PRIMARY_SENSOR.min_valid_infer
    assert share_needed == pytest.approx(0.035)


def test_s1_missing_is_flagged_and_filled() -> None:
    cube = make_test_cube(6, size_px=21, n_dates=16, s1_max_gap_days=-1.0)  # nothing matches
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert (tile.flags & FLAG_S1_MISSING).all()
    assert np.isfinite(tile.frames["s1"]).all()


def _small_fusion(seed: int = 0):
    import torch

    from embedder.config import FusionConfig, ModelConfig
    from embedder.models.fusion import FusionModel
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S1, S2

    torch.manual_seed(seed)
    aes = {s.name: ModalityAutoencoder(s, cfg=ModelConfig.small()) for s in (S1, S2)}
    return FusionModel(aes, cfg=FusionConfig.small()).eval()


def test_fast_path_equals_naive_path() -> None:
    from embedder.inference import Predictor

    cube = make_test_cube(7, size_px=19, n_dates=14, cloud_frac=0.3)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert len(tile.plan.targets) >= 2
    pred = Predictor(_small_fusion(), pixel_batch=10)  # odd batch: batch composition must not matter
    fast = pred.embed_tile(tile, method="fast")
    naive = pred.embed_tile(tile, method="naive")
    assert fast.shape == (len(tile.plan.targets), 7, 5, 5)
    assert np.isfinite(fast).all() and (fast >= 0).all()
    np.testing.assert_allclose(fast, naive, atol=1e-5, rtol=0)


def test_naive_path_builds_windows_per_block_of_rows_not_for_the_whole_tile() -> None:
    import tracemalloc

    from embedder.inference import Predictor

    cube = make_test_cube(7, size_px=19, n_dates=14, cloud_frac=0.3)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    model = _small_fusion()
    whole = Predictor(model, pixel_batch=25).embed_tile(tile, method="naive")  # one block of 5 rows
    split = Predictor(model, pixel_batch=3).embed_tile(tile, method="naive")  # 1 row, in 3 + 2 pixels
    np.testing.assert_allclose(split, whole, atol=1e-6, rtol=0)

    big = prepare_tile(
        make_test_cube(8, size_px=54, n_dates=11), start="2021-01-01", end="2021-12-31", halo_px=7
    )
    assert big.interior_shape == (40, 40) and len(big.plan.targets) == 1
    pred = Predictor(model, pixel_batch=40)
    tracemalloc.start()
    try:
        out = pred.embed_tile(big, method="naive")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.isfinite(out).all()
    whole_tile = 40 * 40 * 11 * sum(f.shape[1] for f in big.frames.values()) * 15 * 15 * 4  # ~190 MB
    assert peak < whole_tile / 10, f"host peak {peak / 1e6:.0f} MB: the windows of the whole tile were built"


def test_tile_edge_embedding_equals_single_window() -> None:
    import torch

    from embedder.inference import Predictor

    cube = make_test_cube(8, size_px=17, n_dates=16, cloud_frac=0.2)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    model = _small_fusion(1)
    emb = Predictor(model).embed_tile(tile)  # interior is 3 x 3
    k, row, col = 0, 2, 0  # an interior edge pixel: its window reaches into the halo
    win = tile.plan.windows[k]
    batch = {}
    for name, gaps in (("s2", tile.plan.s2_gaps[k]), ("s1", tile.plan.s1_gaps[k])):
        x = tile.frames[name][win][:, :, row : row + 15, col : col + 15]  # [11, C, 15, 15]
        batch[name] = torch.from_numpy(x[None].copy())
        batch[f"{name}_gaps"] = torch.from_numpy(gaps[None].copy())
    batch["s1_delta_days"] = torch.tensor([float(tile.plan.s1_delta_days[k])])
    with torch.inference_mode():
        ref = model.embed(batch)[0].numpy()
    np.testing.assert_allclose(emb[k, :, row, col], ref, atol=1e-5)


def test_tile_without_usable_dates_has_no_targets() -> None:
    cube = make_test_cube(9, size_px=17, n_dates=12, unusable_dates=tuple(range(12)))
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert len(tile.plan.usable) == 0 and len(tile.plan.targets) == 0
    assert tile.flags.shape == (0, 3, 3)


def test_row_round_trip() -> None:
    from embedder.inference import TileInputs

    cube = make_test_cube(10, size_px=17, n_dates=14)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    back = TileInputs.from_row(tile.to_row())
    np.testing.assert_array_equal(back.plan.windows, tile.plan.windows)
    np.testing.assert_array_equal(back.flags, tile.flags)
    np.testing.assert_array_equal(back.dates, tile.dates)
    for k in tile.frames:
        np.testing.assert_array_equal(back.frames[k], tile.frames[k])


def test_dense_variant_predictor_equals_its_per_window_path() -> None:
    import dataclasses

    import torch

    from embedder.config import FusionConfig, ModelConfig
    from embedder.inference import Predictor
    from embedder.models.fusion import FusionModel
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S1, S2

    torch.manual_seed(3)
    cfg = dataclasses.replace(ModelConfig.small(), encoder="dense")
    model = FusionModel({s.name: ModalityAutoencoder(s, cfg=cfg) for s in (S1, S2)}, cfg=FusionConfig.small())
    cube = make_test_cube(10, size_px=20, n_dates=13, cloud_frac=0.3)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert len(tile.plan.targets) >= 1
    pred = Predictor(model.eval(), pixel_batch=7)
    dense = pred.embed_tile(tile, method="fast")  # one fully convolutional pass per frame
    naive = pred.embed_tile(tile, method="naive")  # every window re-encoded
    assert dense.shape == (len(tile.plan.targets), 7, 6, 6)
    np.testing.assert_allclose(dense, naive, atol=1e-5, rtol=0)  # interior and edge pixels


def test_device_windows_equal_the_host_windows_in_row_strips() -> None:
    import torch

    from embedder.inference import Predictor, _frame_windows

    rng = np.random.default_rng(4)
    frame = rng.random((3, 19, 22)).astype(np.float32)  # interior 5 x 8
    pred = Predictor(_small_fusion(), pixel_batch=17)  # 2 rows of 8 per strip, the last strip 1 row
    strips = pred.window_batches(torch.from_numpy(frame), 7)
    assert [s.shape[0] for s in strips] == [16, 16, 8]
    np.testing.assert_array_equal(torch.cat(strips).numpy(), _frame_windows(frame, 7))


def test_fast_path_validates_gaps_once_per_tile_not_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Positional and temporal embeddings are computed before the batch loop (no host sync inside it)."""
    import embedder.models.fusion as fusion_mod
    import embedder.models.modality as modality_mod
    from embedder.inference import Predictor

    calls: list[tuple[int, ...]] = []
    real = modality_mod.day_positions

    def counting(gaps, **kw):  # type: ignore[no-untyped-def]
        calls.append(tuple(gaps.shape))
        return real(gaps, **kw)

    monkeypatch.setattr(modality_mod, "day_positions", counting)
    monkeypatch.setattr(fusion_mod, "day_positions", counting)
    cube = make_test_cube(7, size_px=19, n_dates=14, cloud_frac=0.3)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    k = len(tile.plan.targets)
    assert k >= 2
    Predictor(_small_fusion(), pixel_batch=4).embed_tile(tile)  # 25 px: 7 batches per window and sensor
    assert sorted(calls) == sorted([(k, 10), (k, 10), (k, 1)])  # s1, s2 gaps; the fusion's deltas


def test_bad_gaps_are_refused_before_any_batch_runs() -> None:
    import dataclasses

    from embedder.inference import Predictor
    from embedder.models.modality import GapRangeError

    cube = make_test_cube(7, size_px=19, n_dates=14, cloud_frac=0.3)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    gaps = tile.plan.s2_gaps.copy()
    gaps[-1, 3] = np.nan
    bad = dataclasses.replace(tile, plan=dataclasses.replace(tile.plan, s2_gaps=gaps))
    with pytest.raises(GapRangeError, match="non-finite"):
        Predictor(_small_fusion()).embed_tile(bad)


def _bf16_predictor(model: Any, **options: Any) -> Any:
    """``Predictor(model, **options)`` with ``bf16`` or ``frame_bf16`` set: on a CPU without bf16
    instructions it must warn (and still run)."""
    from embedder.inference import Predictor, cpu_bf16_native

    if cpu_bf16_native():
        return Predictor(model, **options)
    with pytest.warns(RuntimeWarning, match="without bfloat16 instructions"):
        return Predictor(model, **options)


def test_cpu_bf16_native_reads_the_cpu_flags() -> None:
    """The check agrees with the kernel's view of the CPU (Linux ``/proc/cpuinfo``)."""
    from embedder.inference import cpu_bf16_native

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = next(
        (
            line.split(":", 1)[1].split()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("flags")
        ),
        [],
    )
    assert cpu_bf16_native() == bool({"avx512_bf16", "amx_bf16", "amx_tile"} & set(flags))


@pytest.mark.parametrize("option", ["bf16", "frame_bf16"])
def test_bf16_warns_on_a_cpu_without_bf16_instructions(option: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import embedder.inference as inference

    model = _small_fusion()
    monkeypatch.setattr(inference, "cpu_bf16_native", lambda: False)
    with pytest.warns(RuntimeWarning, match=f"{option}=True on a CPU without bfloat16 instructions"):
        inference.Predictor(model, **{option: True})
    monkeypatch.setattr(inference, "cpu_bf16_native", lambda: True)
    inference.Predictor(model, **{option: True})  # no warning (warnings are errors here)
    monkeypatch.setattr(inference, "cpu_bf16_native", lambda: False)
    inference.Predictor(model)  # fp32: nothing to warn about


def test_bf16_runs_the_whole_model_close_to_fp32() -> None:
    from embedder.inference import Predictor

    cube = make_test_cube(7, size_px=19, n_dates=14, cloud_frac=0.3)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    model = _small_fusion()
    fp32 = Predictor(model).embed_tile(tile)
    bf16 = _bf16_predictor(model, bf16=True).embed_tile(tile)
    assert bf16.dtype == np.float32 and np.isfinite(bf16).all()
    assert not np.array_equal(bf16, fp32)  # it did run in bfloat16
    scale = float(np.abs(fp32).mean())
    assert float(np.abs(bf16 - fp32).mean()) < 0.05 * scale


def test_frame_bf16_runs_only_the_frame_encoders_in_bf16() -> None:
    import torch

    from embedder.inference import Predictor

    cube = make_test_cube(7, size_px=19, n_dates=14, cloud_frac=0.3)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    model = _small_fusion()
    fp32 = Predictor(model).embed_tile(tile)
    pred = _bf16_predictor(model, frame_bf16=True)
    dtypes: dict[str, set[torch.dtype]] = {"frames": set(), "head": set()}
    hooks = [
        getattr(model.autoencoders["s2"], part).register_forward_hook(
            lambda m, a, out, key=key: dtypes[key].add(out.dtype)  # returns None: the output is kept
        )
        for part, key in (("frame_encoder", "frames"), ("token_proj", "head"))
    ]
    frames_bf16 = pred.embed_tile(tile)
    for h in hooks:
        h.remove()
    assert dtypes == {"frames": {torch.bfloat16}, "head": {torch.float32}}  # the head after the transformer
    assert frames_bf16.dtype == np.float32 and np.isfinite(frames_bf16).all()
    assert not np.array_equal(frames_bf16, fp32)  # the encoders did run in bfloat16
    whole = _bf16_predictor(model, bf16=True).embed_tile(tile)
    assert np.abs(frames_bf16 - fp32).mean() < 0.5 * np.abs(whole - fp32).mean()


WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "fusion.pt"


def _real_cube_embeddings() -> tuple[Any, Callable[..., np.ndarray]]:
    """The committed weights, and ``embed(**Predictor options)``: their ``[7, n]`` embeddings of the real
    CropHarvest cube's valid pixel-dates (skips when the tif is absent)."""
    from embedder.checkpoints import load_fusion
    from embedder.data.cubes import cube_from_cropharvest
    from embedder.evaluation.realdata import CROPHARVEST_TIF
    from embedder.inference import FLAG_VALID, HALO_PX, Predictor

    if not CROPHARVEST_TIF.is_file():
        pytest.skip("realdata CropHarvest tif not present")
    cube = cube_from_cropharvest(CROPHARVEST_TIF)
    times = cube["time"].values
    tile = prepare_tile(cube, start=times[0], end=times[-1], halo_px=HALO_PX)
    model = load_fusion(WEIGHTS).eval()
    valid = (tile.flags & FLAG_VALID) != 0  # [K, h, w]

    def embed(**options: Any) -> np.ndarray:
        make = _bf16_predictor if options.get("bf16") or options.get("frame_bf16") else Predictor
        return make(model, **options).embed_tile(tile).transpose(1, 0, 2, 3)[:, valid]  # [7, n]

    return model, embed


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="committed weights not present")
def test_frame_bf16_moves_real_embeddings_by_a_fraction_of_the_quantisation_step() -> None:
    """The committed weights on the real CropHarvest cube: bf16 frame encoders stay within the store's step."""
    from embedder.config import StoreConfig

    _, embed = _real_cube_embeddings()
    fp32 = embed()
    frames = embed(frame_bf16=True)
    whole = embed(bf16=True)
    step = StoreConfig().quant_step
    rms = float(np.sqrt(np.mean((frames - fp32) ** 2))) / step  # measured 0.13 (whole model bf16: 1.25)
    assert 0 < rms <= 0.25, f"frame_bf16 moved the embeddings by {rms:.3f} quantisation steps (RMS)"
    assert float(np.sqrt(np.mean((whole - fp32) ** 2))) / step > rms


def test_spectral_convolutions_give_the_direct_numbers_and_are_on_by_default_where_they_pay() -> None:
    import copy

    from embedder.inference import Predictor
    from embedder.models.blocks import MultiScaleAttentionBlock, SpectralBranches, multiscale_blocks

    cube = make_test_cube(4, size_px=19, n_dates=13, cloud_frac=0.2)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    model = _small_fusion(3)
    forced = Predictor(copy.deepcopy(model), pixel_batch=12, spectral=True)
    direct = Predictor(copy.deepcopy(model), pixel_batch=12, spectral=False)
    auto = Predictor(copy.deepcopy(model), pixel_batch=12)
    assert forced.spectral and auto.spectral and not direct.spectral
    assert (
        forced.spectral_encoders == ["s1", "s2"] and auto.spectral_encoders == direct.spectral_encoders == []
    )
    fast = forced.embed_tile(tile)
    np.testing.assert_allclose(fast, direct.embed_tile(tile), atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast, forced.embed_tile(tile, method="naive"), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(auto.embed_tile(tile), direct.embed_tile(tile))

    def blocks(pred: Predictor) -> list[SpectralBranches]:  # the frame encoders' multi-scale blocks
        return [b for n in pred.names for b in multiscale_blocks(pred._ae(n).frame_encoder)]

    assert len(blocks(forced)) == 2 and all(b._plans for b in blocks(forced))
    assert not any(b._plans for b in blocks(direct))  # the direct path never built DFT matrices
    # Unset, it is on only where the DFT needs at most half the direct FLOPs: not the small preset's 8 channels.
    assert not any(b._plans for b in blocks(auto))
    (small_direct, small_dft), (paper_direct, paper_dft) = (
        b.spectral_flops((15, 15))
        for b in (blocks(auto)[0], MultiScaleAttentionBlock(149, 149, kernels=(3, 7), reduction=4))
    )
    assert small_dft > small_direct and paper_dft < 0.3 * paper_direct
    assert not any(b.spectral for b in blocks(forced))  # the model is left as it was between calls
    with pytest.raises(ValueError, match="spectral=True cannot be combined with compile='eager'"):
        Predictor(model, spectral=True, compile="eager")
    assert not Predictor(model, compile="eager").spectral


def test_spectral_convolutions_of_the_dense_encoder_give_the_direct_numbers() -> None:
    """A dense-consistent model at the paper's widths: on by default on the CPU, whole frames in blocks."""
    from embedder.config import FusionConfig, ModelConfig
    from embedder.inference import Predictor
    from embedder.models.fusion import FusionModel
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S1, S2

    torch = pytest.importorskip("torch")
    torch.manual_seed(5)
    cube = make_test_cube(5, size_px=46, n_dates=12, n_s1=8, cloud_frac=0.1)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)  # 32 x 32 px interior
    model = FusionModel(
        {s.name: ModalityAutoencoder(s, cfg=ModelConfig(encoder="dense")) for s in (S1, S2)},
        cfg=FusionConfig(),
    )
    auto, direct = Predictor(model), Predictor(model, spectral=False)
    assert auto.spectral_encoders == ["s1", "s2"] and direct.spectral_encoders == []
    fast = auto.embed_tile(tile)
    assert sorted(model.autoencoder("s2").frame_encoder.multiscale._plans) == [(16, 16)]  # 10 px blocks
    scale = float(np.abs(fast).max())
    np.testing.assert_allclose(fast, direct.embed_tile(tile), atol=1e-5 * scale, rtol=0)


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="committed weights not present")
def test_spectral_convolutions_move_real_embeddings_by_rounding_only() -> None:
    """The committed weights on the real CropHarvest cube: the DFT path leaves the store's codes as they are."""
    from embedder.config import StoreConfig

    model, embed = _real_cube_embeddings()
    direct = embed(spectral=False)
    spectral = embed(spectral=True)
    assert model.autoencoders["s2"].frame_encoder.multiscale.block._plans  # the DFT path ran
    worst = float(np.abs(spectral - direct).max()) / StoreConfig().quant_step  # measured 1.5e-4
    assert worst <= 1e-3, f"the DFT convolutions moved an embedding by {worst:.2e} quantisation steps"


def test_compiled_predictor_gives_the_eager_numbers() -> None:
    from embedder.inference import Predictor

    cube = make_test_cube(7, size_px=18, n_dates=13, cloud_frac=0.3)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    model = _small_fusion()
    eager = Predictor(model).embed_tile(tile)
    compiled = Predictor(model, compile="eager").embed_tile(tile)  # torch.compile, dynamo's eager backend
    np.testing.assert_allclose(compiled, eager, atol=1e-6, rtol=0)


def test_shared_first_layer_path_equals_the_plain_one() -> None:
    from embedder.inference import Predictor

    cube = make_test_cube(7, size_px=19, n_dates=14, cloud_frac=0.3)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    model = _small_fusion(2)
    shared = Predictor(model, pixel_batch=9).embed_tile(tile)
    plain = Predictor(model, pixel_batch=9, share_first_layer=False).embed_tile(tile)
    np.testing.assert_allclose(shared, plain, atol=1e-5, rtol=0)


def test_crop_keeps_the_top_left_pixels_and_first_targets() -> None:
    from embedder.inference import Predictor

    cube = make_test_cube(7, size_px=20, n_dates=14, cloud_frac=0.3)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    part = tile.crop(interior_px=3, n_targets=2)
    assert part.interior_shape == (3, 3) and len(part.plan.targets) == 2
    assert part.frames["s2"].shape[2:] == (17, 17) and part.flags.shape == (2, 3, 3)
    pred = Predictor(_small_fusion())
    np.testing.assert_allclose(pred.embed_tile(part), pred.embed_tile(tile)[:2, :, :3, :3], atol=1e-5, rtol=0)


def test_channels_last_is_the_cpu_default_with_the_same_numbers() -> None:
    import copy

    import torch

    from embedder.inference import Predictor

    cube = make_test_cube(5, size_px=18, n_dates=13, cloud_frac=0.2)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    model = _small_fusion()
    default = Predictor(copy.deepcopy(model))
    plain = Predictor(copy.deepcopy(model), channels_last=False)
    assert default.channels_last and not plain.channels_last
    conv = next(m for m in default.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(default.embed_tile(tile), plain.embed_tile(tile), atol=1e-5, rtol=0)


def test_token_batch_chunks_the_transformer_and_fusion_calls_with_the_same_numbers() -> None:
    from embedder.config import FusionConfig, ModelConfig
    from embedder.inference import CPU_TOKEN_BYTES, Predictor
    from embedder.models.fusion import FusionModel
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S1, S2

    cube = make_test_cube(6, size_px=19, n_dates=13, cloud_frac=0.2)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)  # 5 x 5 px interior
    model = _small_fusion()
    d, width = model.autoencoder("s2").cfg.d_model, model.cfg.width
    default = Predictor(model, pixel_batch=20)
    assert default.token_batch == {n: CPU_TOKEN_BYTES // (11 * 3 * d * 4) for n in ("s1", "s2")}
    assert default.fuse_batch == CPU_TOKEN_BYTES // (2 * 3 * width * 4)  # two sensor tokens
    paper = FusionModel(
        {s.name: ModalityAutoencoder(s, cfg=ModelConfig()) for s in (S1, S2)}, cfg=FusionConfig()
    )
    pp = Predictor(paper)  # not capped by pixel_batch 2,048: the bytes decide on the CPU
    assert pp.token_batch == {"s1": 124, "s2": 124} and pp.fuse_batch == 1365
    calls: dict[str, list[int]] = {"s2": [], "fuse": []}
    chunked = Predictor(model, token_batch=7)
    assert chunked.token_batch == {"s1": 7, "s2": 7} and chunked.fuse_batch == 7
    shared, fuse = chunked._shared["s2"], chunked._fuse_fn
    chunked._shared["s2"] = lambda t, *a: (calls["s2"].append(t.shape[0]), shared(t, *a))[1]
    chunked._fuse_fn = lambda z, **kw: (calls["fuse"].append(z["s2"].shape[0]), fuse(z, **kw))[1]
    whole = Predictor(model, token_batch=10_000)
    np.testing.assert_allclose(chunked.embed_tile(tile), whole.embed_tile(tile), atol=1e-5, rtol=0)
    np.testing.assert_allclose(default.embed_tile(tile), whole.embed_tile(tile), atol=1e-5, rtol=0)
    for seen in calls.values():  # 25 pixels per target date in calls of 7, 7, 7, 4
        assert seen[:4] == [7, 7, 7, 4] and len(seen) % 4 == 0
    with pytest.raises(ValueError, match="token_batch = 0"):
        Predictor(model, token_batch=0)


def test_frame_batch_chunks_the_encoder_calls_with_the_same_numbers() -> None:
    from embedder.config import FusionConfig, ModelConfig
    from embedder.inference import Predictor
    from embedder.models.fusion import FusionModel
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S1, S2

    cube = make_test_cube(6, size_px=19, n_dates=13, cloud_frac=0.2)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    model = _small_fusion()
    default = Predictor(model, pixel_batch=20)
    assert default.frame_batch == 24 * 1024 * 1024 // (8 * 2 * 225 * 4)  # widest activation in 24 MiB
    paper = FusionModel(
        {s.name: ModalityAutoencoder(s, cfg=ModelConfig()) for s in (S1, S2)}, cfg=FusionConfig()
    )
    assert Predictor(paper).frame_batch == 93  # 298 channels x 15 x 15 float32 per window
    calls: list[int] = []
    chunked = Predictor(model, pixel_batch=20, frame_batch=7)
    assert chunked.frame_batch == 7
    encode = chunked._frames_fn["s2"]
    chunked._frames_fn["s2"] = lambda x: (calls.append(x.shape[0]), encode(x))[1]
    np.testing.assert_allclose(chunked.embed_tile(tile), default.embed_tile(tile), atol=1e-5, rtol=0)
    assert calls and max(calls) == 7  # 25 windows per frame in strips of 20 (4 rows of 5), chunks of 7
    assert sum(calls) % 25 == 0
    with pytest.raises(ValueError, match="frame_batch = 0"):
        Predictor(model, frame_batch=0)


@pytest.mark.parametrize("encoder", ["paper", "dense"])
def test_cache_bytes_embeds_the_tile_in_row_strips_with_the_same_numbers(encoder: str) -> None:
    import dataclasses

    import torch

    from embedder.config import FusionConfig, ModelConfig
    from embedder.inference import CACHE_BYTES, Predictor
    from embedder.models.fusion import FusionModel
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S1, S2

    torch.manual_seed(5)
    cfg = dataclasses.replace(ModelConfig.small(), encoder=encoder)
    model = FusionModel({s.name: ModalityAutoencoder(s, cfg=cfg) for s in (S1, S2)}, cfg=FusionConfig.small())
    cube = make_test_cube(8, size_px=23, n_dates=13, n_s1=20, cloud_frac=0.2)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)  # 9 x 9 px interior
    whole = Predictor(model.eval(), pixel_batch=20)
    assert whole.cache_bytes == CACHE_BYTES and whole.strip_rows((9, 9)) == 9
    per_px = whole.cache_bytes_per_px()
    assert per_px == 2 * 11 * cfg.d_model * 4 * 4  # tokens and first-layer projections, two sensors
    strips = Predictor(model, pixel_batch=20, cache_bytes=per_px * 9 * 2 + 5)  # 2 rows of 9 fit
    assert strips.strip_rows((9, 9)) == 2
    rows_seen: list[int] = []
    fn = strips._frame_tokens
    strips._frame_tokens = lambda name, frame, halo: (  # type: ignore[method-assign]
        rows_seen.append(frame.shape[1] - 2 * halo),
        fn(name, frame, halo),
    )[1]
    np.testing.assert_allclose(strips.embed_tile(tile), whole.embed_tile(tile), atol=1e-5, rtol=0)
    assert set(rows_seen) == {2, 1}  # four strips of 2 rows, the last of 1
    assert rows_seen.count(1) * 4 == rows_seen.count(2)  # every frame a strip needs, once per strip
    assert Predictor(model, cache_bytes=1).strip_rows((9, 9)) == 1  # at least one row
    with pytest.raises(ValueError, match="cache_bytes = 0"):
        Predictor(model, cache_bytes=0)


def test_strips_of_a_dense_model_are_whole_chunks_of_its_frame_pass() -> None:
    import dataclasses

    from embedder.config import FusionConfig, ModelConfig
    from embedder.inference import Predictor
    from embedder.models.fusion import FusionModel
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S1, S2

    cfg = dataclasses.replace(ModelConfig.small(), encoder="dense")
    model = FusionModel({s.name: ModalityAutoencoder(s, cfg=cfg) for s in (S1, S2)}, cfg=FusionConfig.small())
    probe = Predictor(model, pixel_batch=256)
    per_row = probe.cache_bytes_per_px() * 512  # a 512 px store tile
    pred = Predictor(model, pixel_batch=256, cache_bytes=per_row * 150)
    assert pred.strip_rows((512, 512)) == 128  # 150 rows fit: two 64-row chunks, no extra halo rows
    assert Predictor(model, pixel_batch=256, cache_bytes=per_row * 40).strip_rows((512, 512)) == 40
    plain = FusionModel(
        {s.name: ModalityAutoencoder(s, cfg=ModelConfig.small()) for s in (S1, S2)}, cfg=FusionConfig.small()
    )
    assert Predictor(plain, pixel_batch=256, cache_bytes=per_row * 150).strip_rows((512, 512)) == 150
    paper = FusionModel(
        {s.name: ModalityAutoencoder(s, cfg=ModelConfig(encoder="dense")) for s in (S1, S2)},
        cfg=FusionConfig(),
    )
    assert (
        Predictor(paper).strip_rows((512, 512)) == 64
    )  # 4 GiB: 93 rows of the paper model's ~88 KiB a pixel
