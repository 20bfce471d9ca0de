"""Real-data check: embed the real CropHarvest S1+S2 cube and measure the reconstruction (issue 6.5).

The file ``realdata/s1s2_pixels/cropharvest_98-togo_2019-02-06_2020-02-01.tif`` (17 x 17 px, Togo) is read
by :func:`embedder.data.cubes.cube_from_cropharvest`; docs/real-data.md says how its monthly L1C
composites map to the model's inputs. 12 dates 30 days apart: an 11-date window spans 300 days, so the
200-day rule of SPEC 7 would replace its gaps by 1-day steps (``rule="gap_rule"``: every embedding
carries ``FLAG_GAP_RULE`` and the model sees eleven consecutive days). The default
``rule="composite"`` (:func:`composite_gaps`) keeps the composites' real spacing instead, shrunk by one
factor so the window fits the model's day table (30-day steps become 19.9-day steps). With the 7 px
halo only the centre 3 x 3 pixels get embeddings, on the 2 dates that have 5 dates on each side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from embedder.floors import FloorAccumulator
from embedder.models.fusion import FusionModel
from embedder.sensors import MAX_GAP_SUM_DAYS, PRIMARY_SENSOR, S1

__all__ = [
    "CROPHARVEST_TIF",
    "CropHarvestResult",
    "RealDataError",
    "cli_main",
    "composite_gaps",
    "embed_cropharvest",
    "togo_figures",
]

Rule = Literal["composite", "gap_rule"]
"""How the windows of composites get their day gaps (see :func:`composite_gaps`)."""

CROPHARVEST_TIF = Path("/work/shared/realdata/s1s2_pixels/cropharvest_98-togo_2019-02-06_2020-02-01.tif")
"""The real CropHarvest export shipped in the shared realdata folder."""


class RealDataError(ValueError):
    """The real-data cube cannot be embedded (file missing, no date with enough context)."""


@dataclass(frozen=True)
class CropHarvestResult:
    """Embeddings of the real cube and how well the model reconstructs its windows."""

    dates: list[str]
    """Embedded dates (window centres, ISO)."""
    n_embeddings: int
    """Pixel-dates embedded (centre 3 x 3 px x dates)."""
    all_finite: bool
    """Every embedding value is finite."""
    gap_rule_share: float
    """Share of embeddings whose window needed the 200-day rule (expected 1.0 for 30-day composites)."""
    embedding_mean: list[float]
    """Mean of each of the 7 features."""
    embedding_std: list[float]
    """Standard deviation of each of the 7 features."""
    recon_mae: dict[str, float]
    """Mean absolute reconstruction error per sensor over the whole 11 x 15 x 15 window (0-1 units)."""
    recon_centre_mae: dict[str, float]
    """The same at the centre pixel of the centre date only."""
    baseline_mae: dict[str, float]
    """MAE of predicting each band's window mean (a trivial reference for the reconstruction error)."""
    rule: str = "composite"
    """The gap rule the windows used: ``composite`` (:func:`composite_gaps`) or SPEC 7's ``gap_rule``."""
    gaps_days: list[float] = dataclasses.field(default_factory=list)
    """The S2 day gaps the model saw in the first window."""
    floors: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    """Per sensor, the centre floors of the same windows (``embedder.floors``: ``frame_mean``,
    ``temporal_mean``); compare with :attr:`recon_centre_mae`."""


def composite_gaps(gaps: np.ndarray) -> np.ndarray:
    """The composite rule: ``[K, 10]`` day gaps scaled into the model's day table, proportions kept.

    Each window's gaps are multiplied by one factor so they sum to less than ``MAX_GAP_SUM_DAYS``;
    windows already shorter are unchanged. Composites (e.g. 30-day means) are evenly spaced and far apart; SPEC 7's rule would hand the model
    eleven consecutive days instead, which hides the seasonal spacing. Scaling keeps the order and the
    relative spacing inside the range the model was trained on.
    """
    g = np.asarray(gaps, dtype=np.float64)
    total = g.sum(axis=1, keepdims=True)  # [K, 1]
    scale = np.minimum(1.0, (MAX_GAP_SUM_DAYS - 1) / np.maximum(total, 1e-9))
    return (g * scale).astype(np.float32)


def _windows(frames: np.ndarray, window: np.ndarray, halo_px: int) -> np.ndarray:
    """``[U, C, H, W]`` -> ``[h*w, 11, C, 15, 15]`` windows around every interior pixel."""
    from numpy.lib.stride_tricks import sliding_window_view

    size = 2 * halo_px + 1
    sel = frames[window]  # [11, C, H, W]
    win = sliding_window_view(sel, (size, size), axis=(2, 3))  # [11, C, h, w, 15, 15]
    n = win.shape[2] * win.shape[3]
    return np.ascontiguousarray(win.transpose(2, 3, 0, 1, 4, 5)).reshape(n, *sel.shape[:2], size, size)


@torch.inference_mode()
def embed_cropharvest(
    path: str | Path = CROPHARVEST_TIF, *, model: FusionModel, rule: Rule = "composite"
) -> CropHarvestResult:
    """Embed the real CropHarvest cube at ``path`` with ``model`` and reconstruct its windows.

    ``rule`` picks the windows' day gaps: ``composite`` (:func:`composite_gaps`, the default) or SPEC 7's
    200-day ``gap_rule`` (1-day steps).
    """
    from embedder.data.cubes import cube_from_cropharvest
    from embedder.inference import FLAG_GAP_RULE, HALO_PX, Predictor, masked_embeddings, prepare_tile

    p = Path(path)
    if not p.is_file():
        raise RealDataError(f"no CropHarvest file at {str(p)!r}; pass the .tif from realdata/s1s2_pixels")
    cube = cube_from_cropharvest(p)
    times = cube["time"].values
    tile = prepare_tile(cube, start=times[0], end=times[-1], halo_px=HALO_PX)
    if len(tile.plan.targets) == 0:
        raise RealDataError(f"{p.name}: no date has 5 usable dates on each side; nothing to embed")
    if rule == "composite":
        days = times[tile.plan.usable].astype("datetime64[D]").astype(np.int64)  # [U]
        gaps = composite_gaps(np.diff(days[tile.plan.windows], axis=1))  # [K, 10]
        plan = dataclasses.replace(
            tile.plan, s2_gaps=gaps, s1_gaps=gaps, gap_rule=np.zeros(len(gaps), bool)
        )  # S1 is composited on the same dates
        tile = dataclasses.replace(tile, plan=plan, flags=tile.flags & ~FLAG_GAP_RULE)
    elif rule != "gap_rule":
        raise RealDataError(f"rule {rule!r} is not one of 'composite', 'gap_rule'")
    model = model.eval()
    emb, flags = masked_embeddings(Predictor(model).embed_tile(tile), tile.flags)  # [K, 7, h, w]
    values = emb.transpose(0, 2, 3, 1).reshape(-1, emb.shape[1])  # [K*h*w, 7]
    errs: dict[str, list[np.ndarray]] = {PRIMARY_SENSOR.name: [], S1.name: []}
    centre: dict[str, list[np.ndarray]] = {PRIMARY_SENSOR.name: [], S1.name: []}
    base: dict[str, list[np.ndarray]] = {PRIMARY_SENSOR.name: [], S1.name: []}
    floors = {
        name: FloorAccumulator(spec) for name, spec in ((PRIMARY_SENSOR.name, PRIMARY_SENSOR), (S1.name, S1))
    }
    for k in range(len(tile.plan.targets)):
        window = tile.plan.windows[k]  # [11] usable positions
        batch: dict[str, torch.Tensor] = {}
        for name in (PRIMARY_SENSOR.name, S1.name):
            batch[name] = torch.from_numpy(_windows(tile.frames[name], window, HALO_PX))  # [n, 11, C, 15, 15]
        n = batch[PRIMARY_SENSOR.name].shape[0]
        batch[f"{PRIMARY_SENSOR.name}_gaps"] = torch.from_numpy(tile.plan.s2_gaps[k]).expand(n, -1)  # [n, 10]
        batch[f"{S1.name}_gaps"] = torch.from_numpy(tile.plan.s1_gaps[k]).expand(n, -1)
        batch["s1_delta_days"] = torch.full((n,), float(tile.plan.s1_delta_days[k]))
        recon = model(batch)
        for name, acc in floors.items():
            acc.add({name: batch[name], f"{name}_mask": torch.isfinite(batch[name])})
        for name in errs:
            x, x_hat = batch[name].numpy(), recon[name].float().numpy()  # [n, 11, C, 15, 15]
            errs[name].append(np.abs(x_hat - x).ravel())
            centre[name].append(np.abs(x_hat - x)[:, 5, :, HALO_PX, HALO_PX].ravel())
            base[name].append(np.abs(x - x.mean(axis=(1, 3, 4), keepdims=True)).ravel())
    return CropHarvestResult(
        dates=[str(d) for d in tile.dates],
        n_embeddings=int(values.shape[0]),
        all_finite=bool(np.isfinite(values).all()),
        gap_rule_share=float(((flags & FLAG_GAP_RULE) > 0).mean()),
        embedding_mean=[float(v) for v in values.mean(axis=0)],
        embedding_std=[float(v) for v in values.std(axis=0)],
        recon_mae={k: float(np.concatenate(v).mean()) for k, v in errs.items()},
        recon_centre_mae={k: float(np.concatenate(v).mean()) for k, v in centre.items()},
        baseline_mae={k: float(np.concatenate(v).mean()) for k, v in base.items()},
        rule=rule,
        gaps_days=[float(g) for g in tile.plan.s2_gaps[0]],
        floors={
            name: {k: v for k, v in acc.result().items() if k != "pca_k"}  # 18 windows: no PCA to speak of
            for name, acc in floors.items()
        },
    )


def togo_figures(model: FusionModel, path: str | Path = CROPHARVEST_TIF) -> dict[str, float]:
    """Flat figures of the CropHarvest check under both rules (``bench/quality.py``'s ``realdata_togo_*``).

    ``realdata_togo_centre_mae`` is the S2 centre error under the composite rule and
    ``realdata_togo_floor`` its frame-mean floor on the same windows; ``_gap_rule`` the same under SPEC 7's
    1-day steps; ``realdata_togo_s1_*`` the S1 figures.
    """
    out: dict[str, float] = {}
    for rule in ("composite", "gap_rule"):
        r = embed_cropharvest(path, model=model, rule=rule)
        suffix = "" if rule == "composite" else "_gap_rule"
        out[f"realdata_togo_centre_mae{suffix}"] = r.recon_centre_mae[PRIMARY_SENSOR.name]
        out[f"realdata_togo_s1_centre_mae{suffix}"] = r.recon_centre_mae[S1.name]
        if rule == "composite":
            out["realdata_togo_floor"] = r.floors[PRIMARY_SENSOR.name]["frame_mean"]
            out["realdata_togo_floor_temporal_mean"] = r.floors[PRIMARY_SENSOR.name]["temporal_mean"]
            out["realdata_togo_s1_floor"] = r.floors[S1.name]["frame_mean"]
            out["realdata_togo_embeddings"] = float(r.n_embeddings)
    return out


def cli_main(argv: list[str] | None = None) -> int:
    """``embedder real-data --checkpoint CKPT [--tif PATH]``: print the CropHarvest check as JSON."""
    from embedder.checkpoints import load_fusion

    p = argparse.ArgumentParser(prog="embedder real-data", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="fusion checkpoint (.pt)")
    p.add_argument("--tif", type=Path, default=CROPHARVEST_TIF, help="CropHarvest S1+S2 GeoTIFF")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    p.add_argument(
        "--rule", choices=("composite", "gap_rule"), default="composite",
        help="day gaps of the composites' windows: their real spacing scaled into the model's range "
        "(composite, default) or SPEC 7's 1-day steps (gap_rule)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if not args.checkpoint.is_file():
        p.error(f"--checkpoint {str(args.checkpoint)!r} does not exist; pass a fusion .pt")
    result = embed_cropharvest(args.tif, model=load_fusion(args.checkpoint), rule=args.rule)
    text = json.dumps(asdict(result), indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0 if result.all_finite else 1
