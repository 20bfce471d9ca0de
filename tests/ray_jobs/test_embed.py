"""End-to-end tests of ray_jobs/embed.py: a real local Ray cluster writing to a fake GCS bucket.

One tiny sample region (two 64 px scenes = 2 x 2 tiles of 32 px each, S2 every 10 days, 2021-10..2022-05)
and one untrained small fusion checkpoint serve all tests. The job embeds the 2022-01-06 store period
(366-day blocks, 32 px tiles); each test's region is a few boxes inside chosen tiles (one unit each).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from embedder.checkpoints import save_checkpoint
from embedder.config import FusionConfig, ModelConfig, SampleRegionConfig
from embedder.grid import work_units
from embedder.models.fusion import FusionModel
from embedder.models.modality import ModalityAutoencoder
from embedder.sample import SampleRegion, write_sample_region
from embedder.sensors import S1, S2
from embedder.store import list_done, list_failures, verify
from ray_jobs.embed import main

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

REPO = Path(__file__).resolve().parents[2]
START, END = "2022-01-10", "2022-03-31"  # inside the 366-day block that starts 2022-01-06


@dataclasses.dataclass(frozen=True)
class Setup:
    region: SampleRegion
    checkpoint: Path
    other_checkpoint: Path
    tmp: Path


def _box(epsg: int, left: float, bottom: float, right: float, top: float) -> dict[str, Any]:
    from pyproj import Transformer

    t = Transformer.from_crs(epsg, 4326, always_xy=True)
    ring = [t.transform(x, y) for x, y in ((left, bottom), (right, bottom), (right, top), (left, top))]
    ring.append(ring[0])
    return {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def _tile_boxes(scene: Any, n: int) -> list[dict[str, Any]]:
    """Small boxes inside the ``n`` 32 px tiles that overlap ``scene`` most (one work unit each)."""
    left, bottom, right, top = scene.bounds_utm
    size = 320.0
    found = []
    for row in range(int(bottom // size), int(top // size) + 1):
        for col in range(int(left // size), int(right // size) + 1):
            x0, x1 = max(left, col * size), min(right, (col + 1) * size)
            y0, y1 = max(bottom, row * size), min(top, (row + 1) * size)
            if x1 - x0 > 60 and y1 - y0 > 60:
                found.append(((x1 - x0) * (y1 - y0), (x0 + 20, y0 + 20, x1 - 20, y1 - 20)))
    found.sort(key=lambda f: -f[0])
    assert len(found) >= n, f"scene {scene.name} overlaps only {len(found)} tiles"
    return [_box(scene.epsg, *b) for _, b in found[:n]]


def _geojson(path: Path, boxes: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": boxes}))
    return str(path)


def _checkpoint(path: Path, seed: int, *, encoder: str = "paper") -> Path:
    torch.manual_seed(seed)
    mcfg = dataclasses.replace(ModelConfig.small(), encoder=encoder)
    aes = {s.name: ModalityAutoencoder(s, cfg=mcfg) for s in (S1, S2)}
    return save_checkpoint(path, FusionModel(aes, cfg=FusionConfig.small()))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    tmp = tmp_path_factory.mktemp("embed")
    cfg = dataclasses.replace(
        SampleRegionConfig.tiny(), size_px=64, start=dt.date(2021, 10, 1), end=dt.date(2022, 5, 31)
    )
    region = write_sample_region(tmp / "region", cfg=cfg)
    return Setup(region, _checkpoint(tmp / "fusion.pt", 0), _checkpoint(tmp / "other.pt", 1), tmp)


@pytest.fixture(scope="module")
def gcs() -> Iterator[Any]:
    from embedder.testing.objstore import fake_gcs

    with fake_gcs() as emu:
        yield emu


@pytest.fixture(scope="module")
def cluster(gcs: Any) -> Iterator[Any]:
    from ray_jobs.local_cluster import local_ray_cluster

    with local_ray_cluster(num_cpus=2, env=gcs.env) as c:
        yield c


def _config(setup: Setup, gcs: Any, name: str, *, region: str, catalog: Path | None = None) -> dict[str, Any]:
    return {
        "catalog": str(catalog or setup.region.catalog_path),
        "store": f"{gcs.url}/{name}.zarr",
        "region": region,
        "start": START,
        "end": END,
        "checkpoint": str(setup.checkpoint),
        # untrained weights give features with a std of ~0.02: a finer step keeps verify's 1 % bound
        "store_layout": {
            "tile_px": 32,
            "chunk_px": 32,
            "period_days": 366,
            "chunk_days": 61,
            "quant_step": 1 / 4096,
        },
        "pixel_batch": 512,
        "actor_num_cpus": 0.5,
        "read_num_cpus": 0.5,
        "write_num_cpus": 0.25,
        "max_attempts": 1,
        "storage_options": dict(gcs.storage_options),
        "progress": False,
    }


def _write(tmp: Path, name: str, doc: dict[str, Any]) -> str:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _submit(cluster: Any, gcs: Any, cfg_path: str, **env: str) -> str:
    from ray_jobs.local_cluster import submit_job

    cmd = [sys.executable, "-m", "ray_jobs.embed", "--config", cfg_path]
    return submit_job(cluster, cmd, working_dir=REPO, env={**gcs.env, **env}, stream=False, timeout_s=600)


def _scene(setup: Setup, name: str) -> Any:
    return next(s for s in setup.region.scenes if s.name == name)


def _markers(gcs: Any, store: str) -> dict[str, dict[str, Any]]:
    fs = gcs.filesystem()
    root = store.removeprefix("gs://")
    return {p.rsplit("/", 1)[-1]: json.loads(fs.cat_file(p)) for p in fs.glob(f"{root}/_units/*/*.json")}


def _data_objects(gcs: Any, store: str) -> dict[str, bytes]:
    """Every object of the store's arrays' shards (``<zone>/<array>/c/...``), by key relative to the root."""
    fs = gcs.filesystem()
    root = store.removeprefix("gs://")
    return {p[len(root) + 1 :]: bytes(fs.cat_file(p)) for p in fs.find(root) if "/c/" in p}


@pytest.fixture(scope="module")
def reference(setup: Setup, gcs: Any) -> tuple[str, dict[str, Any]]:
    """Three units of one scene embedded uninterrupted by the same stages, serially in this process."""
    from embedder.config import load_config
    from ray_jobs.config import EmbedJobConfig
    from ray_jobs.embed import run

    region = _geojson(setup.tmp / "three_units.geojson", _tile_boxes(_scene(setup, "alps_north"), 3))
    ref = _config(setup, gcs, "reference", region=region)
    summary = run(load_config(EmbedJobConfig, ref), serial=True)
    assert summary["units_written"] == 3 and summary["units_failed"] == 0
    _check_timing(summary)
    return region, ref


def _check_timing(summary: dict[str, Any], actors: int = 1) -> None:
    """The run summary's timing: start-up, then the embedding calls of ``actors`` actors at most, within
    the wall time."""
    assert set(summary) >= {"seconds", "embed_seconds", "startup_seconds"}
    assert 0 < summary["startup_seconds"] < summary["seconds"]
    assert 0 < summary["embed_seconds"] <= actors * (summary["seconds"] - summary["startup_seconds"]) + 0.05


def test_kill_actor_resubmit_identical(
    setup: Setup, gcs: Any, reference: tuple[str, dict[str, Any]], cluster: Any
) -> None:
    region, ref = reference
    units = work_units(region, START, END, tile_px=32, period_days=366)
    assert len(units) == 3

    # the job: its actor dies on its 2nd call (once), Ray restarts it; then the job is submitted again
    doc = _config(setup, gcs, "killed", region=region)
    cfg_path = _write(setup.tmp, "killed", doc)
    kill_marker = setup.tmp / "killed.marker"
    logs = _submit(
        cluster, gcs, cfg_path, EMBEDDER_TEST_KILL_ACTOR_AT="2", EMBEDDER_TEST_KILL_MARKER=str(kill_marker)
    )
    assert kill_marker.is_file(), "the actor was not killed"
    assert "3 units, 0 already done, 3 to do" in logs
    first = _markers(gcs, doc["store"])
    logs = _submit(cluster, gcs, cfg_path)
    assert f"3 units, {len(first)} already done, {3 - len(first)} to do" in logs
    markers = _markers(gcs, doc["store"])

    # no unit missing, none written twice (markers of the first submission untouched), same objects
    assert sorted(markers) == sorted(f"{u.id}.json" for u in units)
    assert all(markers[k] == v for k, v in first.items())
    ref_markers = _markers(gcs, ref["store"])
    strip = ("written_at",)
    differ = {
        (k, f) for k, m in markers.items() for f in set(m) | set(ref_markers.get(k, {}))
        if f not in strip and m.get(f) != ref_markers.get(k, {}).get(f)
    }  # fmt: skip
    assert not differ, f"markers differ from the uninterrupted run in (unit, field): {sorted(differ)}"
    got, want = _data_objects(gcs, doc["store"]), _data_objects(gcs, ref["store"])
    assert sorted(got) == sorted(want) and len(got) >= 3
    assert all(got[k] == want[k] for k in want), "stores differ bitwise"
    assert any(sum(m["valid_embedding_px"]) > 0 for m in markers.values()), "nothing was embedded"

    report = verify(doc["store"], storage_options=gcs.storage_options)
    assert report.ok, report.summary()
    fs = gcs.filesystem()
    root = doc["store"].removeprefix("gs://")
    coll = json.loads(fs.cat_file(f"{root}/stac/collection.json"))
    assert coll["type"] == "Collection" and any(link["rel"] == "item" for link in coll["links"])

    # a checkpoint of another model is refused before anything is written
    before = _data_objects(gcs, doc["store"])
    assert main(["--config", cfg_path, "--checkpoint", str(setup.other_checkpoint)]) == 2
    assert _data_objects(gcs, doc["store"]) == before


def test_bad_inputs(setup: Setup, gcs: Any, cluster: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # a copy of the region whose Ljubljana scene has one corrupt COG
    region_dir = setup.tmp / "corrupt_region"
    shutil.copytree(setup.region.root, region_dir)
    bad = sorted(region_dir.glob("sentinel-2-l2a/*_T33*/B04.tif"))[3]  # Ljubljana is in UTM zone 33
    bad.write_bytes(b"this is not a GeoTIFF")

    alps, lju = _scene(setup, "alps_north"), _scene(setup, "ljubljana_basin")
    region = _geojson(
        setup.tmp / "bad.geojson",
        [*_tile_boxes(alps, 1),  # a good unit
         *_tile_boxes(lju, 1),  # its COGs include a corrupt one
         _box(alps.epsg, 300_050, 5_000_050, 300_100, 5_000_100)],  # no data at all
    )  # fmt: skip
    units = {u.tile.zone_name + ("_nodata" if u.tile.col < 1000 else ""): u for u in work_units(
        region, START, END, tile_px=32, period_days=366)}  # fmt: skip
    assert sorted(units) == ["utm32N", "utm32N_nodata", "utm33N"]
    doc = _config(setup, gcs, "bad", region=region, catalog=region_dir / "catalog.json")
    cfg_path = _write(setup.tmp, "bad", doc)

    from ray_jobs.local_cluster import JobFailedError

    with pytest.raises(JobFailedError) as info:
        _submit(cluster, gcs, cfg_path)
    assert '"units_failed": 1' in str(info.value), "the job did not run to its summary"
    failures = list_failures(doc["store"], storage_options=gcs.storage_options)
    assert [f["unit"] for f in failures] == [units["utm33N"].id]
    assert bad.name in failures[0]["reason"] or "tif" in failures[0]["reason"].lower()
    assert list_done(doc["store"], storage_options=gcs.storage_options) == sorted(
        [units["utm32N"].id, units["utm32N_nodata"].id]
    )
    nodata = _markers(gcs, doc["store"])[f"{units['utm32N_nodata'].id}.json"]
    assert nodata["dates"] == [] and "empty" in nodata["info"]
    report = verify(doc["store"], storage_options=gcs.storage_options)
    assert report.missing == [units["utm33N"].id] and not report.problems, report.summary()

    # a region without any tile is refused with the grid's error (exit 2), nothing is started
    capsys.readouterr()
    assert main(["--config", cfg_path, "--region", "10,50,10,50"]) == 2
    assert "GridError" in capsys.readouterr().err


def test_dense_model_through_the_job(setup: Setup, gcs: Any, cluster: Any) -> None:
    """A dense-consistent checkpoint runs through the same Ray Data job (its actors take the dense path),
    in the CPU layout docs/operations.md recommends: one 1-thread actor per core (2 actors of 0.9 CPU on
    the 2-CPU cluster, reads and writes at 0.1 CPU).

    The submitted job's store equals, object for object, the same stages run serially in this process,
    and the store says which encoder made it. (That the dense path equals the per-window computation
    is tests/test_inference.py's test of the predictor.)
    """
    from embedder.config import load_config
    from embedder.store import as_store
    from ray_jobs.config import EmbedJobConfig
    from ray_jobs.embed import run

    checkpoint = _checkpoint(setup.tmp / "dense.pt", 2, encoder="dense")
    region = _geojson(setup.tmp / "dense_units.geojson", _tile_boxes(_scene(setup, "alps_north"), 2))
    per_core = {"checkpoint": str(checkpoint), "actor_num_cpus": 0.9, "actor_threads": 1, "min_actors": 2,
                "max_actors": 2, "read_num_cpus": 0.1, "write_num_cpus": 0.1}  # fmt: skip
    serial = {**_config(setup, gcs, "dense-serial", region=region), **per_core}
    summary = run(load_config(EmbedJobConfig, serial), serial=True)
    assert summary["units_written"] == 2 and summary["encoders"] == {"s1": "dense", "s2": "dense"}
    _check_timing(summary)

    doc = {**_config(setup, gcs, "dense-job", region=region), **per_core}
    logs = _submit(cluster, gcs, _write(setup.tmp, "dense-job", doc))
    assert '"units_written": 2' in logs and '"s2": "dense"' in logs
    timing = {
        k: float(v) for k, v in re.findall(r'"(seconds|embed_seconds|startup_seconds)": ([0-9.]+)', logs)
    }
    _check_timing(timing, actors=2)  # the submitted job's summary: the actors' start-up is in startup_seconds
    got, want = _data_objects(gcs, doc["store"]), _data_objects(gcs, serial["store"])
    assert sorted(got) == sorted(want) and all(got[k] == want[k] for k in want), "stores differ bitwise"
    assert any(sum(m["valid_embedding_px"]) > 0 for m in _markers(gcs, doc["store"]).values())
    report = verify(doc["store"], storage_options=gcs.storage_options)
    assert report.ok, report.summary()
    attrs = as_store(doc["store"], gcs.storage_options).attrs
    assert attrs["embedder:encoders"] == {"s1": "dense", "s2": "dense"}
    assert attrs["geoemb:model"]["encoders"] == {"s1": "dense", "s2": "dense"}


def test_verify_repair_reembeds_only_the_damaged_unit(
    setup: Setup, gcs: Any, reference: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flipped bit: reads refuse the chunk, verify names the unit, --repair re-embeds it and nothing else."""
    import numpy as np

    from embedder.config import load_config
    from embedder.grid import WorkUnit
    from embedder.store import CorruptChunkError, SeriesReader
    from embedder.store.verify import cli_verify
    from ray_jobs.config import EmbedJobConfig
    from ray_jobs.embed import run

    region, ref = reference
    doc = _config(setup, gcs, "repair", region=region)
    run(load_config(EmbedJobConfig, doc), serial=True)
    fs, root = gcs.filesystem(), doc["store"].removeprefix("gs://")
    good_markers, good_objects = _markers(gcs, doc["store"]), _data_objects(gcs, doc["store"])
    assert good_objects == _data_objects(gcs, ref["store"])  # same job, same bytes as the reference

    # damage one embedding shard in the middle of its first chunk
    key = sorted(k for k in good_objects if "/embedding/" in k)[1]
    data = bytearray(good_objects[key])
    data[len(data) // 4] ^= 0x04
    fs.pipe_file(f"{root}/{key}", bytes(data))
    bad_unit = next(
        m["unit"] for m in good_markers.values() if key in m["objects"]
    )  # the unit whose shard it is
    unit = WorkUnit.from_id(bad_unit)
    reader = SeriesReader(doc["store"], storage_options=gcs.storage_options)
    z = reader.zone(unit.tile.zone_name)
    ty, tx = z.tile_index(unit.tile)
    rows, cols = (a.ravel() for a in np.mgrid[ty * 32 : ty * 32 + 32, tx * 32 : tx * 32 + 32])
    d0 = unit.period.start_day
    with pytest.raises(CorruptChunkError, match=bad_unit):
        reader.series(unit.tile.zone_name, rows, cols, d0, d0 + 366)
    report = verify(doc["store"], storage_options=gcs.storage_options)
    assert not report.ok and report.damaged == [bad_unit]

    # one command repairs it, through the embed job (a local Ray instance), rewriting only that unit
    for k, v in gcs.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RAY_ADDRESS", "local")
    opts = json.dumps(gcs.storage_options)
    assert cli_verify([doc["store"], "--repair", "--storage-options", opts]) == 0
    assert _data_objects(gcs, doc["store"]) == good_objects
    after = _markers(gcs, doc["store"])
    changed = {k for k in after if after[k] != good_markers[k]}
    assert changed == {f"{bad_unit}.json"}  # only the damaged unit was written again
    assert verify(doc["store"], storage_options=gcs.storage_options).ok
    # idempotent: a repaired store has nothing to repair
    assert cli_verify([doc["store"], "--repair", "--storage-options", opts]) == 0
    assert _markers(gcs, doc["store"]) == after
