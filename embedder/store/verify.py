"""Checking a store: :func:`verify` (``embedder verify``) and the planned units."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import numpy as np

from embedder.geo import EPOCH, UtmZone, day_index, parse_date
from embedder.grid import PIXEL_M, WorkUnit
from embedder.sensors import EMBEDDING_DIM
from embedder.store._codec import FILL_CODE
from embedder.store._fs import get_json, zarr_store
from embedder.store._layout import (
    CorruptChunkError,
    Flag,
    Store,
    StoreError,
    ZoneExtent,
    as_store,
    georef_attrs,
    unit_marker,
    zone_attrs,
)
from embedder.store.writer import list_done, list_failures


@dataclasses.dataclass
class VerifyReport:
    """Result of :func:`verify`: ``ok`` only when the store is complete and consistent."""

    url: str
    """The store."""
    problems: list[str] = dataclasses.field(default_factory=list)
    """Everything wrong, one line each (empty when consistent)."""
    planned: int = 0
    """Units in the store's plan."""
    done: int = 0
    """Units with a done-marker."""
    missing: list[str] = dataclasses.field(default_factory=list)
    """Planned units without a done-marker."""
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Recorded failures."""
    damaged: list[str] = dataclasses.field(default_factory=list)
    """Done units whose objects are missing, differ from what was written, or do not decode (``embedder
    verify --repair`` re-embeds them)."""
    feature_std: list[float] = dataclasses.field(default_factory=list)
    """Std of each stored feature over the checked units."""
    quant_err_rel_std: float = float("nan")
    """Worst feature's RMS quantisation error (step / sqrt(12)) over its std."""

    @property
    def complete(self) -> bool:
        """Every planned unit is done."""
        return not self.missing

    @property
    def ok(self) -> bool:
        """Complete and without problems."""
        return self.complete and not self.problems

    def summary(self) -> str:
        """Human-readable multi-line summary."""
        lines = [
            f"store {self.url}: {'OK' if self.ok else 'NOT OK'}",
            f"  units done {self.done} / planned {self.planned}, failures recorded {len(self.failures)}",
            f"  quantisation RMS error / feature std (worst) = {self.quant_err_rel_std:.4f} (bound 0.01)",
        ]
        for name, units in (("missing", self.missing), ("damaged", self.damaged)):
            if units:
                more = f" (+{len(units) - 10} more)" if len(units) > 10 else ""
                lines.append(f"  {name} units: {', '.join(units[:10])}{more}")
        if self.damaged:
            lines.append(f"  repair: embedder verify {self.url} --repair (re-embeds the damaged units only)")
        for f in self.failures[:10]:
            lines.append(f"  failed {f['unit']}: {f['reason']}")
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


def _check_zone(st: Store, zone: str, problems: list[str]) -> ZoneExtent | None:
    import xarray as xr

    try:
        zat = zone_attrs(st, zone)
        z = ZoneExtent.from_attrs(zone, zat)
    except (StoreError, KeyError) as exc:
        problems.append(f"{zone}: group metadata unreadable ({exc})")
        return None
    cfg = st.cfg
    expected_epsg = UtmZone.from_name(zone).epsg
    if z.epsg != expected_epsg:
        problems.append(f"{zone}: proj:epsg is {z.epsg}, expected {expected_epsg}")
    _, gt = georef_attrs(dataclasses.replace(z, epsg=expected_epsg), cfg)
    try:
        ds = xr.open_zarr(zarr_store(st.url, st.storage_options, read_only=True), group=zone,
                          zarr_format=3, consolidated=False, chunks=None)  # fmt: skip
    except Exception as exc:
        problems.append(f"{zone}: cannot be opened by xarray ({type(exc).__name__}: {exc})")
        return None
    sref = ds["spatial_ref"].attrs if "spatial_ref" in ds.variables else {}
    got_gt = [float(v) for v in str(sref.get("GeoTransform", "")).split()] if sref else []
    if not np.allclose(got_gt, gt) if len(got_gt) == 6 else True:
        problems.append(f"{zone}: spatial_ref GeoTransform {sref.get('GeoTransform')!r} != expected {gt}")
    try:
        from pyproj import CRS

        if CRS.from_wkt(sref.get("crs_wkt", "")).to_epsg() != expected_epsg:
            problems.append(f"{zone}: spatial_ref crs_wkt is not EPSG:{expected_epsg}")
    except Exception as exc:
        problems.append(f"{zone}: spatial_ref crs_wkt unreadable ({exc})")
    tp = cfg.tile_px
    exp_x = gt[0] + PIXEL_M * (np.arange(z.n_cols * tp) + 0.5)
    exp_y = gt[3] - PIXEL_M * (np.arange(z.n_rows * tp) + 0.5)
    if ds.sizes.get("x") != exp_x.size or not np.allclose(ds["x"].values, exp_x):
        problems.append(f"{zone}: x coordinate does not match the zone extent / GeoTransform")
    if ds.sizes.get("y") != exp_y.size or not np.allclose(ds["y"].values, exp_y):
        problems.append(f"{zone}: y coordinate does not match the zone extent / GeoTransform")
    t = ds["time"].values
    if t.size != z.n_periods * cfg.period_days or (t.size and t[0] != np.datetime64(EPOCH.isoformat(), "ns")):
        problems.append(f"{zone}: time axis is not daily from {EPOCH} over {z.n_periods} periods")
    emb = ds["embedding"]
    if emb.dims != ("time", "feature", "y", "x") or emb.sizes["feature"] != EMBEDDING_DIM:
        problems.append(
            f"{zone}: embedding dims {emb.dims} / sizes {dict(emb.sizes)} are not (time, 7, y, x)"
        )
    if emb.encoding.get("scale_factor") != cfg.quant_step:
        problems.append(
            f"{zone}: embedding scale_factor {emb.encoding.get('scale_factor')} != {cfg.quant_step}"
        )
    try:
        import rioxarray  # noqa: F401  (registers .rio)

        rio_crs = ds["embedding"].rio.crs
        if rio_crs is None or rio_crs.to_epsg() != expected_epsg:
            problems.append(f"{zone}: rioxarray sees CRS {rio_crs}, expected EPSG:{expected_epsg}")
        tr = ds["embedding"].rio.transform()
        if not np.allclose([tr.c, tr.a, tr.b, tr.f, tr.d, tr.e], gt):
            problems.append(f"{zone}: rioxarray transform {tuple(tr)[:6]} != expected {gt}")
    except Exception as exc:
        problems.append(f"{zone}: rioxarray cannot read the georeferencing ({type(exc).__name__}: {exc})")
    return z


def verify(
    url: str,
    *,
    storage_options: dict[str, Any] | None = None,
    max_units_read: int | None = None,
) -> VerifyReport:
    """Check that the store is complete and consistent.

    Checks: root and zone metadata; georeferencing (CRS, GeoTransform, x/y coordinates, and what
    rioxarray reads); every planned unit has a done-marker; every done unit's objects exist with the
    recorded size and sha256 and decode; embeddings are stored exactly where ``flags`` has VALID and
    only on the marker's dates; ``valid_px`` matches the marker; the quantisation RMS error is at most
    1 % of each feature's std. ``max_units_read`` limits how many done units are decoded (default all).
    """
    import zarr

    report = VerifyReport(url=url)
    problems = report.problems
    try:
        st = as_store(url, storage_options)
    except Exception as exc:
        problems.append(f"not an embedding store: {exc}")
        return report
    cfg = st.cfg
    fs, root = st.fs, st.root
    plan = get_json(fs, f"{root}/_plan.json")
    if plan is None:
        problems.append("_plan.json is missing: cannot tell whether the store is complete")
        plan = {"units": []}
    done = set(list_done(st))
    report.planned = len(plan["units"])
    report.done = len(done)
    report.missing = sorted(set(plan["units"]) - done)
    report.failures = list_failures(st)
    extra = sorted(done - set(plan["units"]))
    if extra:
        problems.append(f"done units not in the plan: {', '.join(extra[:5])}")

    zones: dict[str, ZoneExtent] = {}
    for zone in st.attrs.get("embedder:zones", []):
        z = _check_zone(st, zone, problems)
        if z is not None:
            zones[zone] = z

    zstore = zarr_store(url, storage_options, read_only=True)
    group = zarr.open_group(zstore, mode="r", zarr_format=3)
    sums = np.zeros(EMBEDDING_DIM)
    sq = np.zeros(EMBEDDING_DIM)
    n = 0
    tp, pd_ = cfg.tile_px, cfg.period_days
    for i, unit_id in enumerate(sorted(done)):
        if max_units_read is not None and i >= max_units_read:
            break
        unit = WorkUnit.from_id(unit_id)
        zname = unit.tile.zone_name
        try:
            marker = unit_marker(st, zname, unit_id) or {}
        except CorruptChunkError as damaged:
            problems.append(f"{unit_id}: {damaged.reason}")
            _mark(report, unit_id)
            continue
        if zname not in zones:
            problems.append(f"{unit_id}: its zone {zname} is not in the store")
            continue
        for rel, meta in marker.get("objects", {}).items():
            path = f"{root}/{rel}"
            if meta["sha256"] is None:
                continue
            try:
                data = fs.cat_file(path)
            except FileNotFoundError:
                problems.append(f"{unit_id}: object {rel} is missing")
                _mark(report, unit_id)
                continue
            if len(data) != meta["nbytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
                problems.append(f"{unit_id}: object {rel} differs from what was written (size/sha256)")
                _mark(report, unit_id)
        z = zones[zname]
        ty, tx = z.tile_index(unit.tile)
        t0 = unit.period.start_day
        ys, xs = slice(ty * tp, (ty + 1) * tp), slice(tx * tp, (tx + 1) * tp)
        try:
            days = sorted(day_index(parse_date(d)) for d in marker.get("dates", []))
            flags = np.asarray(_array(group, f"{zname}/flags")[t0 : t0 + pd_, ys, xs])  # [P, H, W]
            counts = np.asarray(_array(group, f"{zname}/valid_px")[t0 : t0 + pd_, ty, tx])  # [P]
            day_idx = np.asarray(days, dtype=np.int64)
            codes = np.asarray(
                _array(group, f"{zname}/embedding").get_orthogonal_selection((day_idx, slice(None), ys, xs))
            )  # [T, 7, H, W]
        except Exception as exc:
            problems.append(f"{unit_id}: data cannot be decoded ({type(exc).__name__}: {exc})")
            _mark(report, unit_id)
            continue
        off_dates = np.setdiff1d(np.flatnonzero(flags.any(axis=(1, 2))) + t0, days)
        if off_dates.size:
            problems.append(f"{unit_id}: flags set on days not in its marker ({off_dates[:3].tolist()})")
        exp_counts = np.zeros(pd_, dtype=np.int64)
        exp_counts[np.asarray(days, dtype=np.int64) - t0] = marker.get("valid_counts", [])
        if not np.array_equal(counts, exp_counts):
            problems.append(f"{unit_id}: valid_px differs from the marker's valid_counts")
        if codes.size:
            valid = (flags[np.asarray(days) - t0] & Flag.VALID) > 0  # [T, H, W]
            stored = (codes != FILL_CODE).all(axis=1)
            if not np.array_equal(valid, stored):
                problems.append(
                    f"{unit_id}: embeddings present at {int((stored & ~valid).sum())} pixels without VALID and "
                    f"missing at {int((valid & ~stored).sum())} VALID pixels"
                )
            vals = codes.transpose(1, 0, 2, 3)[:, valid].astype(np.float64) * cfg.quant_step  # [7, N]
            sums += vals.sum(axis=1)
            sq += (vals**2).sum(axis=1)
            n += vals.shape[1]
        if marker.get("clipped"):
            problems.append(f"{unit_id}: {marker['clipped']} values were clipped by the quantisation range")
    if n > 1:
        std = np.sqrt(np.maximum(sq / n - (sums / n) ** 2, 0.0))
        report.feature_std = [float(s) for s in std]
        rel = cfg.quant_step / math.sqrt(12.0) / np.maximum(std, 1e-12)
        report.quant_err_rel_std = float(rel.max())
        if report.quant_err_rel_std > 0.01:
            problems.append(
                f"quantisation RMS error {cfg.quant_step / math.sqrt(12):.5f} exceeds 1 % of feature std "
                f"{float(std.min()):.4f}; use a smaller StoreConfig.quant_step"
            )
    return report


def _mark(report: VerifyReport, unit_id: str) -> None:
    if unit_id not in report.damaged:
        report.damaged.append(unit_id)


JOB_CONFIG = "_job/embed.json"
"""Where the embed job records the configuration it ran with (without storage options), so that
:func:`repair` can run the same job again."""


def repair(
    url: str,
    *,
    storage_options: dict[str, Any] | None = None,
    config: str | None = None,
    log: Any = print,
) -> tuple[VerifyReport, VerifyReport]:
    """Re-embed the damaged units of a store through the normal embed job; returns (before, after).

    :func:`verify` lists the damaged units (objects missing, changed since written, or undecodable);
    their done-markers are removed, so they are not done any more, and the embed job
    (``python -m ray_jobs.embed``; on the Ray cluster of ``RAY_ADDRESS`` when set, else a local one)
    runs with ``config`` (an embed YAML) or the configuration the job recorded in the store
    (:data:`JOB_CONFIG`). The job writes only units without a marker: the damaged ones, and planned
    units never finished. Nothing else is rewritten; running it again on a repaired store does nothing.
    """
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import yaml

    before = verify(url, storage_options=storage_options)
    if not before.damaged and not before.missing:
        log(f"nothing to repair: {before.done} units done, none damaged or missing")
        return before, before
    st = as_store(url, storage_options)
    if config is not None:
        if not Path(config).is_file():
            raise StoreError(f"--config {config!r} does not exist; pass the embed job's YAML")
        job = yaml.safe_load(Path(config).read_text())
    else:
        job = get_json(st.fs, f"{st.root}/{JOB_CONFIG}")
        if job is None:
            raise StoreError(
                f"store {url!r} has no recorded job configuration ({JOB_CONFIG}: written by embed jobs since "
                "checked reads); pass the embed YAML it was written with: --config embed.yaml"
            )
    job = {**job, "store": url, "storage_options": dict(storage_options or {})}
    for unit_id in before.damaged:
        zone = WorkUnit.from_id(unit_id).tile.zone_name
        st.fs.rm_file(f"{st.root}/_units/{zone}/{unit_id}.json")  # not done: the job writes it again
    log(
        f"re-embedding {len(before.damaged)} damaged unit(s) {before.damaged[:10]}"
        + (f" and {len(before.missing)} never finished" if before.missing else "")
    )
    with tempfile.TemporaryDirectory(prefix="embedder-repair-") as tmp:
        cfg_path = Path(tmp) / "embed.yaml"
        cfg_path.write_text(yaml.safe_dump(job, sort_keys=False))
        proc = subprocess.run(
            [sys.executable, "-m", "ray_jobs.embed", "--config", str(cfg_path)], check=False
        )
    if proc.returncode not in (0, 1):
        raise StoreError(f"the embed job was refused (exit {proc.returncode}); see its message above")
    after = verify(url, storage_options=storage_options)
    return before, after


def _array(group: Any, path: str) -> Any:
    import zarr

    node = group[path]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{path} is a group, expected an array")
    return node


def cli_verify(argv: list[str]) -> int:
    """``embedder verify STORE_URL``: exit 0 only when the store is complete and consistent."""
    import argparse

    p = argparse.ArgumentParser(prog="embedder verify", description=cli_verify.__doc__)
    p.add_argument("url", help="store URL (path, file://, gs://, s3://)")
    p.add_argument("--storage-options", default=None, help="fsspec storage options as JSON")
    p.add_argument("--max-units-read", type=int, default=None, help="decode at most this many done units")
    p.add_argument(
        "--repair", action="store_true",
        help="re-embed the damaged units (and planned units never finished) through the embed job",
    )  # fmt: skip
    p.add_argument(
        "--config", default=None,
        help="with --repair: the embed job's YAML (default: the configuration the job recorded in the store)",
    )  # fmt: skip
    a = p.parse_args(argv)
    so = json.loads(a.storage_options) if a.storage_options else None
    if a.repair:
        before, after = repair(a.url, storage_options=so, config=a.config)
        if after is not before:
            print("before repair:\n" + before.summary())
        print(after.summary())
        return 0 if after.ok else 1
    if a.config is not None:
        p.error("--config is used only with --repair")
    report = verify(a.url, storage_options=so, max_units_read=a.max_units_read)
    print(report.summary())
    return 0 if report.ok else 1


def units_of(store: Store) -> list[WorkUnit]:
    """The store's planned work units (from ``_plan.json``)."""
    plan = get_json(store.fs, f"{store.root}/_plan.json") or {"units": []}
    return [WorkUnit.from_id(u) for u in plan["units"]]
