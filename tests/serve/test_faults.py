"""Fault injection (issue 18, part 7): damaged chunks, objects and metadata; oversize and malformed requests.

Each case damages a fresh copy of the small serving store (values read before the damage are the
reference) and asks the Python API, the CLI (in-process) and the HTTP app (TestClient). Every answer
must be a named error or a result marked partial: no traceback text, no 5xx, and no wrong value (the
undamaged parts equal the reference; the damaged parts are NaN, left out or transparent, never zeros).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_stores import UNITS, pixel_lonlat

from embedder.cli import main as cli_main
from embedder.config import ServeConfig
from embedder.grid import EPOCH
from embedder.serve.api import (
    PartialResultWarning,
    RegionTooLargeError,
    StoreReader,
    export_region,
    probe,
    read_region,
    sample_points,
)
from embedder.serve.cli import EXIT_PARTIAL
from embedder.serve.http import PARTIAL_HEADER, create_app
from embedder.store import MISSING_CHUNK, CorruptChunkError, ShardIndex, StoreMetadataError

CD = 6  # chunk_days of the test store
P0 = 6 * 366  # first day of the stored period (2021-01-05)
ROW, COL = 5, 5  # a pixel of unit 0, spatial block (0, 0)


def _date(day: int) -> str:
    return (EPOCH + dt.timedelta(days=int(day))).isoformat()


def _bbox(unit, r0: int, r1: int, c0: int, c1: int) -> str:
    lon_a, lat_a = pixel_lonlat(unit, r1 - 1, c0)
    lon_b, lat_b = pixel_lonlat(unit, r0, c1 - 1)
    return f"{lon_a},{lat_a},{lon_b},{lat_b}"


# both units' rows 0..20, unit 0 columns 40..63 and unit 1 columns 0..19 (each within spatial block x 1/0)
BBOX_BOTH = (
    f"{pixel_lonlat(UNITS[0], 19, 40)[0]},{pixel_lonlat(UNITS[0], 19, 40)[1]},"
    f"{pixel_lonlat(UNITS[1], 0, 19)[0]},{pixel_lonlat(UNITS[1], 0, 19)[1]}"
)
BBOX_U0 = _bbox(UNITS[0], 0, 12, 0, 12)  # inside unit 0, block (0, 0)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serve_stores import build_store

    path = tmp_path_factory.mktemp("faults") / "pristine.zarr"
    build_store(str(path))
    return path


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the store for one case (damaged in place after its reference reads)."""
    dst = tmp_path / "emb.zarr"
    shutil.copytree(pristine, dst)
    return dst


def _chunk_range(store: Path, unit: int, name: str, coords: tuple[int, ...]) -> tuple[int, int]:
    """(offset, nbytes) of one inner chunk in its unit's shard object (from the done-marker)."""
    marker = json.loads((store / "_units" / "utm32N" / f"{UNITS[unit].id}.json").read_text())
    idx = ShardIndex.from_json(marker["shard_index"][name])
    assert idx.offsets[coords] != np.uint64(MISSING_CHUNK)
    return int(idx.offsets[coords]), int(idx.nbytes[coords])


def _shard(store: Path, unit: int, name: str) -> Path:
    tx = unit  # the two units are tile columns 0 and 1 of the zone arrays
    return store / "utm32N" / name / "c" / ("6/0/0" if name == "embedding" else "6/0") / str(tx)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _client(store: Path, cache: Path, cfg: ServeConfig | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note on httpx
        from fastapi.testclient import TestClient

        return TestClient(create_app(str(store), cfg=cfg, cache_dir=cache), raise_server_exceptions=False)


def _get(client, url: str, **params):
    r = client.get(url, params=params)
    assert r.status_code < 500, r.text
    assert (
        "Traceback" not in r.text[:2000]
        if r.headers.get("content-type", "").startswith(("app", "text"))
        else True
    )
    return r


def _tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def _alpha(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


# ---------------------------------------------------------------------------------------------------
# a flipped bit in one embedding chunk: partial results, the rest exactly as before
# ---------------------------------------------------------------------------------------------------


def test_bit_flip_in_a_chunk(store: Path, tmp_path: Path, capsys) -> None:
    lon, lat = pixel_lonlat(UNITS[0], ROW, COL)
    c = 20  # the damaged time chunk: days P0 + 120 .. P0 + 125
    start, end = _date(P0 + (c - 3) * CD), _date(P0 + (c + 3) * CD - 1)
    before = probe(str(store), lon, lat, start=start, end=end)
    assert before.status == "ok"
    reg0 = read_region(str(store), BBOX_U0, start=start, end=end)
    win0 = read_region(str(store), BBOX_U0, start=start, end=end, window="6D")
    cache = tmp_path / "cache"
    z = 15
    tx, ty = _tile_xy(lon, lat, z)
    day = next(d for d in before.dates if P0 + c * CD <= (d - EPOCH).days < P0 + (c + 1) * CD)
    tile0 = _get(_client(store, cache), f"/tiles/{z}/{tx}/{ty}.png", date=day.isoformat()).content

    o, n = _chunk_range(store, 0, "embedding", (c, 0, 0, 0))
    _flip(_shard(store, 0, "embedding"), o + n // 2)
    lost_days = range(P0 + c * CD, P0 + (c + 1) * CD)

    # API: the point comes back partial: the damaged chunk's dates left out, every other one unchanged
    with pytest.warns(PartialResultWarning, match="PARTIAL"):
        s = probe(str(store), lon, lat, start=start, end=end)
    assert s.status == "partial" and s.unreadable[0].key.startswith(f"c/6/0/0/0 (inner chunk {c}, 0, 0)")
    keep = [i for i, d in enumerate(before.dates) if (d - EPOCH).days not in lost_days]
    assert s.dates == tuple(before.dates[i] for i in keep) and len(keep) < len(before.dates)
    np.testing.assert_array_equal(s.embedding, before.embedding[keep])
    assert s.to_json()["unreadable"][0]["first_date"] == _date(P0 + c * CD)
    # only the damaged chunk asked for: nothing can be returned -> the named error with the repair
    with pytest.raises(CorruptChunkError, match=r"--repair"):
        probe(str(store), lon, lat, start=day.isoformat(), end=day.isoformat())

    # regions: NaN (never 0) exactly where the chunk is, the rest equal, marked partial
    with pytest.warns(PartialResultWarning):
        reg = read_region(str(store), BBOX_U0, start=start, end=end)
    assert reg.attrs["partial"] == 1 and "checksum" in reg.attrs["unreadable"][0]
    bad = reg["unreadable"].values > 0  # [T, y, x]
    t_bad = [
        i
        for i, t in enumerate(reg["time"].values)
        if (np.datetime64(t, "D") - np.datetime64(EPOCH)).astype(int) in lost_days
    ]
    assert bad[t_bad].all() and not np.delete(bad, t_bad, axis=0).any()
    emb, emb0 = reg["embedding"].values, reg0["embedding"].values
    assert np.isnan(emb[t_bad]).all()
    np.testing.assert_array_equal(np.delete(emb, t_bad, axis=0), np.delete(emb0, t_bad, axis=0))
    with pytest.warns(PartialResultWarning):
        win = read_region(str(store), BBOX_U0, start=start, end=end, window="6D")
    w_bad = win["unreadable"].values.any(axis=(1, 2))
    assert w_bad.sum() == 1 and np.isnan(win["embedding"].values[w_bad]).all()
    np.testing.assert_array_equal(win["embedding"].values[~w_bad], win0["embedding"].values[~w_bad])

    # CLI: the result printed, "PARTIAL" on stderr, exit 4
    code, out, err = _cli(capsys, "probe", str(store), str(lon), str(lat), "--start", start, "--end", end)
    assert (
        code == EXIT_PARTIAL
        and "PARTIAL" in err
        and "--repair" in err
        and len(out.splitlines()) == 1 + len(keep)
    )
    code, out, err = _cli(capsys, "region", str(store), "--bbox", BBOX_U0, "--start", start, "--end", end)
    assert code == EXIT_PARTIAL and "PARTIAL region" in err
    tif = tmp_path / "out.tif"
    code, _, err = _cli(
        capsys, "export", str(store), str(tif), "--bbox", BBOX_U0, "--start", start, "--end", end
    )
    assert code == EXIT_PARTIAL and "PARTIAL export" in err
    import rasterio

    with rasterio.open(tif) as f:
        assert f.tags()["partial"] == "1" and "checksum" in f.tags()["unreadable"]
    code, _, err = _cli(
        capsys, "probe", str(store), str(lon), str(lat), "--start", day.isoformat(), "--end", day.isoformat()
    )
    assert code == 2 and err.startswith("error: corrupt chunk utm32N/embedding/c/6/0/0/0")

    # HTTP: 200 partial with the header, 409 where nothing is left, a transparent tile area, /health
    client = _client(store, cache)
    r = _get(client, "/api/probe", lon=lon, lat=lat, start=start, end=end)
    assert r.status_code == 200 and r.json()["status"] == "partial" and PARTIAL_HEADER in r.headers
    r = _get(client, "/api/probe", lon=lon, lat=lat, start=day.isoformat(), end=day.isoformat())
    assert r.status_code == 409 and r.json()["status"] == "damaged" and "--repair" in r.json()["detail"]
    r = _get(client, "/api/region", bbox=BBOX_U0, start=start, end=end, format="json")
    assert r.status_code == 200 and r.json()["partial"] is True and r.json()["unreadable"]
    r = _get(client, "/api/region", bbox=BBOX_U0, start=start, end=end, format="netcdf")
    assert r.status_code == 200 and PARTIAL_HEADER in r.headers
    r = _get(client, f"/tiles/{z}/{tx}/{ty}.png", date=day.isoformat())
    assert r.status_code == 200 and PARTIAL_HEADER in r.headers
    img, img0 = _alpha(r.content), _alpha(tile0)
    gone = (img0[..., 3] == 255) & (img[..., 3] == 0)
    assert gone.any()  # the damaged block is transparent, not a colour of zeros
    same = img[..., 3] == 255
    assert same.any() and np.array_equal(img[same], img0[same])  # every other pixel as before
    health = _get(client, "/health").json()
    assert health["status"] == "degraded" and health["checksummed"] is True
    assert any(d["key"].startswith("c/6/0/0/0") for d in health["damaged"])


# ---------------------------------------------------------------------------------------------------
# a truncated shard object, a deleted one whose done-marker exists
# ---------------------------------------------------------------------------------------------------


def test_truncated_shard_object(store: Path, tmp_path: Path, capsys) -> None:
    start, end = _date(P0 + 60), _date(P0 + 89)
    lon0, lat0 = pixel_lonlat(UNITS[0], 10, 50)  # spatial block (0, 1): in the cut-off part
    lon1, lat1 = pixel_lonlat(UNITS[1], 10, 10)
    ok1 = probe(str(store), lon1, lat1, start=start, end=end)
    reg0 = read_region(str(store), BBOX_BOTH, start=start, end=end, window="MS")
    shard = _shard(store, 0, "embedding")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 8])  # block (0, 0) partly kept

    with pytest.raises(CorruptChunkError, match=r"utm32N/embedding/c/6/0/0/0"):
        probe(str(store), lon0, lat0, start=start, end=end)
    with pytest.warns(PartialResultWarning):
        pts = sample_points(str(store), [(lon0, lat0), (lon1, lat1)], start=start, end=end)
    assert [p.status for p in pts] == ["unreadable", "ok"] and pts[0].unreadable
    np.testing.assert_array_equal(pts[1].embedding, ok1.embedding)
    with pytest.warns(PartialResultWarning):
        reg = read_region(str(store), BBOX_BOTH, start=start, end=end, window="MS")
    bad = reg["unreadable"].values.any(axis=0)  # [y, x]
    emb, emb0 = reg["embedding"].values, reg0["embedding"].values
    assert bad.any() and not bad.all()
    assert np.isnan(emb[:, :, bad]).all()  # unit 0 columns
    np.testing.assert_array_equal(emb[:, :, ~bad], emb0[:, :, ~bad])  # unit 1 columns unchanged

    code, _, err = _cli(capsys, "probe", str(store), str(lon0), str(lat0), "--start", start, "--end", end)
    assert code == 2 and "corrupt chunk" in err and "--repair" in err
    code, _, err = _cli(
        capsys, "region", str(store), "--bbox", BBOX_BOTH, "--start", start, "--end", end, "--window", "MS"
    )
    assert code == EXIT_PARTIAL and "PARTIAL" in err
    client = _client(store, tmp_path / "cache")
    assert _get(client, "/api/probe", lon=lon0, lat=lat0, start=start, end=end).status_code == 409
    r = client.post("/api/points", json={"points": [[lon0, lat0], [lon1, lat1]], "start": start, "end": end})
    assert r.status_code == 200 and [s["status"] for s in r.json()["series"]] == ["unreadable", "ok"]
    assert _get(client, "/health").json()["status"] == "degraded"


def test_deleted_shard_object_with_a_done_marker(store: Path, tmp_path: Path, capsys) -> None:
    start, end = _date(P0 + 30), _date(P0 + 59)
    lon1, lat1 = pixel_lonlat(UNITS[1], 10, 10)
    reg0 = read_region(str(store), BBOX_BOTH, start=start, end=end)
    _shard(store, 1, "embedding").unlink()  # zarr alone would read it as fill: "no data", silently

    with pytest.raises(CorruptChunkError, match="missing although the unit's done-marker lists it"):
        probe(str(store), lon1, lat1, start=start, end=end)
    with pytest.warns(PartialResultWarning, match="missing"):
        reg = read_region(str(store), BBOX_BOTH, start=start, end=end)
    bad = reg["unreadable"].values > 0
    emb, emb0 = reg["embedding"].values, reg0["embedding"].values
    assert bad.any() and np.isnan(emb.transpose(0, 2, 3, 1)[bad]).all()
    keep = np.broadcast_to(~bad[:, None], emb.shape)
    np.testing.assert_array_equal(emb[keep], emb0[keep])
    code, _, err = _cli(
        capsys,
        "export",
        str(store),
        str(tmp_path / "o.nc"),
        "--bbox",
        BBOX_BOTH,
        "--start",
        start,
        "--end",
        end,
    )
    assert code == EXIT_PARTIAL and "missing" in err
    client = _client(store, tmp_path / "cache")
    r = _get(client, "/api/probe", lon=lon1, lat=lat1, start=start, end=end)
    assert r.status_code == 409 and "missing" in r.json()["detail"]


def test_damaged_valid_px_chunk_falls_back_to_the_flags(store: Path, tmp_path: Path) -> None:
    """valid_px only summarises the flags: its damage costs a flags read, not the region (noted for /health)."""
    start, end = _date(P0 + 30), _date(P0 + 89)
    reg0 = read_region(str(store), BBOX_BOTH, start=start, end=end)
    shard = _shard(store, 0, "valid_px")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])

    r = StoreReader(str(store))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialResultWarning)  # the embeddings themselves are intact
        reg = read_region(r, BBOX_BOTH, start=start, end=end)
    np.testing.assert_array_equal(reg["time"].values, reg0["time"].values)
    np.testing.assert_array_equal(reg["embedding"].values, reg0["embedding"].values)
    assert any(e.array == "utm32N/valid_px" for e in r.damaged)  # what /health reports


def test_damaged_done_marker(store: Path, tmp_path: Path, capsys) -> None:
    """A done-marker cut mid-document: the unit is damaged (named, repairable), the other unit is served."""
    from embedder.store import verify

    start, end = _date(P0 + 30), _date(P0 + 59)
    lon0, lat0 = pixel_lonlat(UNITS[0], 10, 50)
    lon1, lat1 = pixel_lonlat(UNITS[1], 10, 10)
    (ref0,) = sample_points(str(store), [(lon0, lat0)], start=start, end=end)
    assert ref0.status == "ok"
    marker = store / "_units" / "utm32N" / f"{UNITS[1].id}.json"
    marker.write_text(marker.read_text()[:60])

    with pytest.raises(CorruptChunkError, match="done-marker is not JSON") as info:
        probe(str(store), lon1, lat1, start=start, end=end)
    assert UNITS[1].id in str(info.value) and "verify" in str(info.value) and "--repair" in str(info.value)
    with pytest.warns(PartialResultWarning, match="done-marker"):
        got = sample_points(str(store), [(lon0, lat0), (lon1, lat1)], start=start, end=end)
    assert [p.status for p in got] == ["ok", "unreadable"] and got[1].unreadable  # left out, never zeros
    np.testing.assert_array_equal(got[0].embedding, ref0.embedding)  # unit 0 intact
    report = verify(str(store))
    assert report.damaged == [UNITS[1].id]  # what `embedder verify --repair` re-embeds
    assert any("done-marker" in p for p in report.problems)
    code, _, err = _cli(capsys, "probe", str(store), str(lon1), str(lat1), "--start", start, "--end", end)
    assert code != 0 and "Traceback" not in err and "done-marker" in err
    client = _client(store, tmp_path / "cache")
    r = _get(client, "/api/probe", lon=lon1, lat=lat1, start=start, end=end)
    assert r.status_code == 409 and "done-marker" in r.json()["detail"]


def test_kill_during_write_then_rerun_verifies_clean(pristine: Path, tmp_path: Path) -> None:
    """A writer process killed (os._exit) in the middle of a unit: not done, refused nowhere; a re-run of
    the unit completes it and the store verifies clean, with exactly the values of an uninterrupted write."""
    import subprocess
    import sys

    from serve_stores import fake_unit_data

    from embedder.store import as_store, is_done, verify, write_unit

    store = tmp_path / "killed.zarr"
    shutil.copytree(pristine, store)
    marker = store / "_units" / "utm32N" / f"{UNITS[1].id}.json"
    marker.unlink()  # unit 1 not done: the writer below rewrites it
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import embedder.store.writer as w
from serve_stores import UNITS, fake_unit_data
real, n = w.put_object, [0]
def dying(fs, path, data):
    n[0] += 1
    if n[0] == 2:  # one object of the unit written, the next one never: the process dies
        os._exit(9)
    real(fs, path, data)
w.put_object = dying
d = fake_unit_data(UNITS[1], seed=99)
w.write_unit({str(store)!r}, UNITS[1], d["embeddings"], d["flags"], d["dates"], valid_counts=d["valid_counts"])
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 9, proc.stderr[-2000:]
    st = as_store(str(store))
    assert not is_done(st, UNITS[1])
    rep = verify(str(store))
    assert not rep.ok and rep.missing == [UNITS[1].id]
    d = fake_unit_data(UNITS[1], seed=11)  # what build_store wrote there
    write_unit(st, UNITS[1], d["embeddings"], d["flags"], d["dates"], valid_counts=d["valid_counts"])
    assert verify(str(store)).ok
    a, b = _date(P0 + 30), _date(P0 + 89)
    np.testing.assert_array_equal(
        read_region(str(store), BBOX_BOTH, start=a, end=b)["embedding"].values,
        read_region(str(pristine), BBOX_BOTH, start=a, end=b)["embedding"].values,
    )


# ---------------------------------------------------------------------------------------------------
# damaged metadata: a named error everywhere (nothing can be served without the store's layout)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["zone", "root", "array"])
def test_damaged_metadata(store: Path, tmp_path: Path, capsys, which: str) -> None:
    path = {"zone": store / "utm32N" / "zarr.json", "root": store / "zarr.json",
            "array": store / "utm32N" / "embedding" / "zarr.json"}[which]  # fmt: skip
    path.write_text(path.read_text()[:40])  # cut mid-document
    lon, lat = pixel_lonlat(UNITS[0], ROW, COL)
    a, b = "2021-03-01", "2021-03-31"
    if which == "array":  # points read by byte range without it; regions need it: named error, 409
        assert probe(str(store), lon, lat, start=a, end=b).status == "ok"
        with pytest.raises(StoreMetadataError, match="damaged"):
            read_region(str(store), BBOX_U0, start=a, end=b)
        code, _, err = _cli(capsys, "region", str(store), "--bbox", BBOX_U0, "--start", a, "--end", b)
        assert code == 2 and err.startswith("error: the array metadata utm32N/embedding/zarr.json")
        client = _client(store, tmp_path / "cache")  # the service starts
        r = _get(client, "/api/region", bbox=BBOX_U0, start=a, end=b, format="json")
        assert r.status_code == 409 and "damaged" in r.json()["detail"]
        return
    with pytest.raises(StoreMetadataError, match="damaged"):
        probe(str(store), lon, lat, start=a, end=b)
    code, _, err = _cli(capsys, "probe", str(store), str(lon), str(lat), "--start", a, "--end", b)
    assert code == 2 and err.startswith("error: ") and "damaged" in err
    if True:
        assert cli_main(["serve", str(store), "--no-cache"]) == 1  # refuses to start, one line
        err = capsys.readouterr().err
        assert "StoreMetadataError" in err and "damaged" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------
# oversize and malformed requests
# ---------------------------------------------------------------------------------------------------


def test_oversize_requests_are_refused_before_reading(pristine: Path, tmp_path: Path, capsys) -> None:
    url = str(pristine)
    start, end = "2021-01-05", "2021-12-31"
    with pytest.raises(RegionTooLargeError, match=r"MiB in memory, over the limit of 1\.0 MiB"):
        read_region(url, BBOX_BOTH, start=start, end=end, max_mib=1)
    with pytest.raises(RegionTooLargeError, match=r"over the limit of .*max_export_gib"):
        export_region(url, BBOX_BOTH, tmp_path / "x.tif", start=start, end=end, max_gib=1e-4)
    assert not list(tmp_path.glob("*x.tif*"))  # nothing written
    code, _, err = _cli(
        capsys, "region", url, "--bbox", BBOX_BOTH, "--start", start, "--end", end, "--max-mib", "1"
    )
    assert code == 1 and err.startswith("too large: ") and len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, "export", url, str(tmp_path / "x.nc"), "--bbox", BBOX_BOTH, "--start", start,
                        "--end", end, "--max-gib", "0.0001")  # fmt: skip
    assert code == 1 and "limit" in err
    client = _client(pristine, tmp_path / "cache", ServeConfig(max_request_mib=0.05))
    r = _get(client, "/api/region", bbox=BBOX_BOTH, start=start, end=end, format="json")
    assert r.status_code == 413 and "MiB" in r.json()["detail"]
    lon, lat = pixel_lonlat(UNITS[0], ROW, COL)
    tx, ty = _tile_xy(lon, lat, 15)
    r = _get(client, f"/tiles/15/{tx}/{ty}.png", start="2021-03-01", end="2021-04-30")
    assert r.status_code == 413 and "max_request_mib" in r.json()["detail"]


def test_malformed_requests(pristine: Path, tmp_path: Path, capsys) -> None:
    url = str(pristine)
    for argv in (
        ["region", url, "--bbox", "a,b,c,d", "--start", "2021-01-01", "--end", "2021-02-01"],
        ["region", url, "--bbox", BBOX_U0, "--start", "2021-13-01", "--end", "2021-02-01"],
        [
            "export",
            url,
            str(tmp_path / "no" / "x.tif"),
            "--bbox",
            BBOX_U0,
            "--start",
            "2021-01-01",
            "--end",
            "2021-02-01",
        ],
        ["probe", str(tmp_path / "nothing.zarr"), "9.9", "46.2"],
    ):
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (argv, err)
    client = _client(pristine, tmp_path / "cache")
    for path, params in (
        ("/api/region", {"bbox": "1,2,3", "start": "2021-01-01", "end": "2021-02-01"}),
        ("/api/region", {"bbox": BBOX_U0, "start": "2021-02-01", "end": "2021-01-01", "window": "x" * 16}),
        ("/api/probe", {"lon": "abc", "lat": 46}),
        ("/tiles/40/0/0.png", {"date": "2021-01-01"}),
        ("/tiles/15/0/0.png", {}),
    ):
        r = _get(client, path, **params)
        assert r.status_code == 422 and len(r.text) < 2000, (path, r.text)
    assert _get(client, "/health").json() == {
        "status": "ok", "store": url, "checksummed": True, "n_damaged": 0, "damaged": [], "repair": None,
    }  # fmt: skip
    assert StoreReader(url).damaged == []
