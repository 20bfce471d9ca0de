"""The embedding store: round trips (local, fake-gcs, moto), concurrent writers, all-or-nothing, verify."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

import embedder.store as store_mod
from embedder.cli import main as cli_main
from embedder.config import StoreConfig
from embedder.grid import Period, Tile, WorkUnit
from embedder.store import (
    FILL_CODE,
    Flag,
    StoreError,
    create_store,
    dequantise,
    is_done,
    list_done,
    list_failures,
    open_store,
    quantise,
    record_failure,
    verify,
    write_unit,
)
from embedder.testing.embeddings import fake_unit_data
from embedder.testing.objstore import CountingFS

CFG = StoreConfig(tile_px=64, chunk_px=32)  # small tiles; the default time layout (366 d, 6 d chunks)


def _units(n_cols=2, periods=(6,)):
    return [
        WorkUnit(tile=Tile(zone=32, south=False, col=82 + c, row=1016, size_px=64), period=Period(index=k))
        for c in range(n_cols)
        for k in periods
    ]


def _check_unit(ds, unit, data, step):
    """Everything written for ``unit`` reads back through xarray within half a quantisation step."""
    tile_left, _, _, tile_top = unit.tile.bounds
    sub = ds.sel(x=slice(tile_left, tile_left + 640), y=slice(tile_top, tile_top - 640))
    sub = sub.sel(time=data["dates"].astype("datetime64[ns]"))
    emb = sub["embedding"].values  # [T, 7, 64, 64] decoded floats, NaN = none
    assert emb.shape == data["embeddings"].shape
    want = data["embeddings"]
    np.testing.assert_array_equal(np.isnan(emb), np.isnan(want))
    assert np.nanmax(np.abs(emb - want)) <= step / 2 + 1e-6
    np.testing.assert_array_equal(sub["flags"].values, data["flags"])


@pytest.fixture
def local_store(tmp_path):
    units = _units()
    url = str(tmp_path / "emb.zarr")
    st = create_store(url, units=units, model_version="m1", inputs={"catalog": "sample"}, cfg=CFG)
    return st, units


def test_quantise_bounds_and_fill():
    step = CFG.quant_step
    v = np.array([0.0, 1.234, 5.0, np.nan, -0.001, -1.0, 300.0], dtype=np.float32)
    codes, clipped = quantise(v, step=step)
    assert codes.dtype == np.uint16 and codes[3] == FILL_CODE
    assert clipped == 2  # -1.0 and 300.0; -0.001 is float noise below half a step
    back = dequantise(codes, step=step)
    assert np.isnan(back[3])
    assert np.all(np.abs(back[:3] - v[:3]) <= step / 2)
    assert back[5] == 0.0 and back[6] == pytest.approx((FILL_CODE - 1) * step)


def test_quantisation_error_within_one_percent_of_std():
    u = _units(1)[0]
    data = fake_unit_data(u, seed=3)
    e = data["embeddings"]
    codes, clipped = quantise(e, step=CFG.quant_step)
    err = dequantise(codes, step=CFG.quant_step) - e
    assert clipped == 0
    rel = np.sqrt(np.nanmean(err**2, axis=(0, 2, 3))) / np.nanstd(e, axis=(0, 2, 3))  # [7]
    assert rel.max() <= 0.01


def test_local_round_trip_and_georeferencing(local_store):
    st, units = local_store
    datas = [fake_unit_data(u, seed=i) for i, u in enumerate(units)]
    for u, d in zip(units, datas, strict=True):
        w = write_unit(st, u, d["embeddings"], d["flags"], d["dates"], valid_counts=d["valid_counts"])
        assert w.n_dates == len(d["dates"]) and w.clipped == 0
        assert is_done(st, u)
    ds = open_store(st.url)["utm32N"]
    for u, d in zip(units, datas, strict=True):
        _check_unit(ds, u, d, CFG.quant_step)
    # a day without acquisitions is empty everywhere
    assert np.isnan(ds["embedding"].sel(time="2021-01-05").values).all()
    # CF / rioxarray georeferencing
    import rioxarray  # noqa: F401

    assert ds["embedding"].rio.crs.to_epsg() == 32632
    tr = ds["embedding"].rio.transform()
    assert (tr.a, tr.e, tr.c, tr.f) == (10.0, -10.0, 82 * 640.0, 1017 * 640.0)
    # per-date valid observation counts land in the tile's cell
    vp = ds["valid_px"].isel(tile_y=0, tile_x=1).sel(time=datas[1]["dates"].astype("datetime64[ns]")).values
    np.testing.assert_array_equal(vp, datas[1]["valid_counts"])
    rep = verify(st.url)
    assert rep.ok, rep.summary()
    assert rep.quant_err_rel_std <= 0.01
    assert list_done(st.url) == sorted(u.id for u in units)


def test_gcs_round_trip_and_verify(gcs_bucket):
    units = _units()
    url = f"{gcs_bucket.url}/emb.zarr"
    so = gcs_bucket.storage_options
    st = create_store(url, units=units, model_version="m1", cfg=CFG, storage_options=so)
    datas = [fake_unit_data(u, seed=10 + i) for i, u in enumerate(units)]
    for u, d in zip(units, datas, strict=True):
        write_unit(st, u, d["embeddings"], d["flags"], d["dates"])
    ds = open_store(url, storage_options=so)["utm32N"]
    for u, d in zip(units, datas, strict=True):
        _check_unit(ds, u, d, CFG.quant_step)
    rep = verify(url, storage_options=so)
    assert rep.ok, rep.summary()
    assert cli_main(["verify", url, "--storage-options", json.dumps(so)]) == 0


def test_s3_round_trip(s3_bucket):
    units = _units(1)
    url = f"{s3_bucket.url}/emb.zarr"
    so = s3_bucket.storage_options
    st = create_store(url, units=units, model_version="m1", cfg=CFG, storage_options=so)
    d = fake_unit_data(units[0], seed=5)
    write_unit(st, units[0], d["embeddings"], d["flags"], d["dates"])
    _check_unit(open_store(url, storage_options=so)["utm32N"], units[0], d, CFG.quant_step)


def test_concurrent_writers_touch_disjoint_objects_and_lose_nothing(gcs_bucket):
    # adjacent in space (two tile columns) and in time (two period blocks): 4 units, 2 writers at once
    units = _units(n_cols=2, periods=(6, 7))
    url = f"{gcs_bucket.url}/emb.zarr"
    so = gcs_bucket.storage_options
    st = create_store(url, units=units, model_version="m1", cfg=CFG, storage_options=so)
    datas = {u.id: fake_unit_data(u, seed=i) for i, u in enumerate(units)}
    barrier = threading.Barrier(2)

    def write(u):
        d = datas[u.id]
        barrier.wait(timeout=30) if u.period.index == 6 else None  # the first two start together
        return write_unit(st, u, d["embeddings"], d["flags"], d["dates"])

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(write, units))
    key_sets = [set(r.keys) for r in results]
    for i in range(len(key_sets)):
        for j in range(i + 1, len(key_sets)):
            assert not key_sets[i] & key_sets[j], (results[i].unit_id, results[j].unit_id)
    # every object in the store under the arrays was written by exactly one unit (plus the template)
    fs = gcs_bucket.filesystem()
    chunk_objs = {p.split("emb.zarr/", 1)[1] for p in fs.find(url) if "/c/" in p and "/time/" not in p
                  and "/x/" not in p and "/y/" not in p and "spatial_ref" not in p}  # fmt: skip
    assert chunk_objs == set().union(*key_sets) - {
        k for k in set().union(*key_sets) if k.startswith("_units")
    }
    ds = open_store(url, storage_options=so)["utm32N"]
    for u in units:
        _check_unit(ds, u, datas[u.id], CFG.quant_step)


def test_interrupted_write_is_detected_and_rewritten(local_store, monkeypatch):
    st, units = local_store
    u = units[0]
    d = fake_unit_data(u, seed=1)
    real_put = store_mod.put_object
    calls = []

    def failing_put(fs, path, data):
        calls.append(path)
        if len(calls) == 2:  # after the embedding shard, before flags / counts / marker
            raise ConnectionError("simulated worker loss")
        real_put(fs, path, data)

    monkeypatch.setattr(store_mod.writer, "put_object", failing_put)
    with pytest.raises(ConnectionError):
        write_unit(st, u, d["embeddings"], d["flags"], d["dates"])
    monkeypatch.setattr(store_mod.writer, "put_object", real_put)
    assert not is_done(st, u)  # data landed partly, but no marker: the unit is not done
    rep = verify(st.url)
    assert not rep.ok and u.id in rep.missing
    write_unit(st, u, d["embeddings"], d["flags"], d["dates"])
    assert is_done(st, u)
    _check_unit(open_store(st.url)["utm32N"], u, d, CFG.quant_step)

    # an interrupted *rewrite* of a done unit un-does it before touching any data object
    d2 = fake_unit_data(u, seed=2)
    calls.clear()
    monkeypatch.setattr(store_mod.writer, "put_object", failing_put)
    with pytest.raises(ConnectionError):
        write_unit(st, u, d2["embeddings"], d2["flags"], d2["dates"])
    assert not is_done(st, u)


def test_failures_are_recorded_and_cleared(local_store):
    st, units = local_store
    record_failure(st, units[1], "EmptyCubeError: no usable S2 date", exc=ValueError("empty"))
    fails = list_failures(st.url)
    assert [f["unit"] for f in fails] == [units[1].id]
    assert "no usable" in fails[0]["reason"] and "ValueError" in fails[0]["exception"]
    rep = verify(st.url)
    assert not rep.ok and "no usable" in rep.summary()
    d = fake_unit_data(units[1], seed=0)
    write_unit(st, units[1], d["embeddings"], d["flags"], d["dates"])
    assert list_failures(st.url) == []


def test_verify_catches_missing_chunk_and_bad_georeferencing(local_store):
    st, units = local_store
    for i, u in enumerate(units):
        d = fake_unit_data(u, seed=i)
        write_unit(st, u, d["embeddings"], d["flags"], d["dates"])
    assert verify(st.url).ok
    fs, root = st.fs, st.root
    shard = next(p for p in fs.find(f"{root}/utm32N/embedding") if "/c/" in p)
    fs.rm_file(shard)
    rep = verify(st.url)
    assert not rep.ok and any("missing" in p for p in rep.problems), rep.summary()
    assert cli_main(["verify", st.url]) == 1
    # bad georeferencing: shift the GeoTransform by one pixel
    meta_path = f"{root}/utm32N/spatial_ref/zarr.json"
    meta = json.loads(fs.cat_file(meta_path))
    gt = meta["attributes"]["GeoTransform"].split()
    gt[0] = str(float(gt[0]) + 10.0)
    meta["attributes"]["GeoTransform"] = " ".join(gt)
    fs.pipe_file(meta_path, json.dumps(meta).encode())
    rep = verify(st.url)
    assert any("GeoTransform" in p for p in rep.problems), rep.summary()


def test_verify_catches_flags_without_embedding(local_store):
    st, units = local_store
    for i, u in enumerate(units):
        d = fake_unit_data(u, seed=i)
        write_unit(st, u, d["embeddings"], d["flags"], d["dates"])
    # corrupt: a VALID flag on a day that has no embedding (written behind the store's back)
    g = zarr.open_group(st.url, mode="r+")
    g["utm32N/flags"][6 * 366 + 1, 0, 0] = 1
    rep = verify(st.url)
    assert not rep.ok
    assert any("flags set on days" in p or "differs" in p for p in rep.problems), rep.summary()


def test_reopen_resumes_and_rejects_other_model(local_store):
    st, units = local_store
    again = create_store(st.url, units=units, model_version="m1", inputs={"catalog": "sample"}, cfg=CFG)
    assert again.attrs["embedder:fingerprint"] == st.attrs["embedder:fingerprint"]
    with pytest.raises(StoreError, match="fingerprint"):
        create_store(st.url, units=units, model_version="m2", inputs={"catalog": "sample"}, cfg=CFG)
    # a unit inside the extent joins the plan (the two-column extent holds col 83 too, period 6)
    mid = WorkUnit(tile=Tile(zone=32, south=False, col=83, row=1016, size_px=64), period=Period(index=6))
    wide = create_store(str(st.url) + "2", units=[units[0], _units(3)[2]], model_version="m1", cfg=CFG)
    assert verify(wide.url).planned == 2
    create_store(wide.url, units=[mid], model_version="m1", cfg=CFG)
    assert mid.id in verify(wide.url).missing
    far = WorkUnit(tile=Tile(zone=32, south=False, col=10, row=1016, size_px=64), period=Period(index=6))
    with pytest.raises(StoreError, match="outside"):
        create_store(st.url, units=[far], model_version="m1", inputs={"catalog": "sample"}, cfg=CFG)
    for k in (5, 7):  # before the first or after the last planned period: the time axis is fixed
        other_time = WorkUnit(tile=units[0].tile, period=Period(index=k))
        with pytest.raises(StoreError, match="time extent"):
            create_store(
                st.url, units=[other_time], model_version="m1", inputs={"catalog": "sample"}, cfg=CFG
            )


def test_write_unit_rejects_bad_input(local_store):
    st, units = local_store
    u = units[0]
    d = fake_unit_data(u, seed=0)
    with pytest.raises(StoreError, match="embeddings shape"):
        write_unit(st, u, d["embeddings"][:, :3], d["flags"], d["dates"])
    bad_dates = d["dates"].copy()
    bad_dates[0] = np.datetime64("2030-01-01")
    with pytest.raises(StoreError, match="outside unit"):
        write_unit(st, u, d["embeddings"], d["flags"], bad_dates)
    emb = d["embeddings"].copy()
    i = np.argwhere(d["flags"][0] & Flag.VALID)[0]
    emb[0, 2, i[0], i[1]] = np.nan
    with pytest.raises(StoreError, match="VALID"):
        write_unit(st, u, emb, d["flags"], d["dates"])
    other = WorkUnit(tile=Tile(zone=32, south=False, col=82, row=1016, size_px=128), period=Period(index=6))
    with pytest.raises(StoreError, match="layout"):
        write_unit(st, other, d["embeddings"], d["flags"], d["dates"])
    assert not is_done(st, u)


def test_empty_unit_is_done_without_data(local_store):
    st, units = local_store
    w = write_unit(st, units[0], np.zeros((0, 7, 64, 64), "f4"), np.zeros((0, 64, 64), "u1"), [])
    assert is_done(st, units[0]) and w.nbytes == 0


def _written(st, units):
    data = {}
    for i, u in enumerate(units):
        data[u.id] = fake_unit_data(u, seed=i)
        write_unit(st, u, data[u.id]["embeddings"], data[u.id]["flags"], data[u.id]["dates"])
    return data


def test_a_pixel_year_is_one_byte_range_per_array(local_store):
    """Shards lie spatial-major: a block's time chunks are adjacent, and the marker holds the index."""
    st, units = local_store
    _written(st, units[:1])
    marker = json.loads(st.fs.cat_file(f"{st.root}/_units/utm32N/{units[0].id}.json"))
    for name, coords in (("embedding", "6/0/0/0"), ("flags", "6/0/0")):
        idx = store_mod.ShardIndex.from_json(marker["shard_index"][name])
        shard = st.fs.cat_file(f"{st.root}/utm32N/{name}/c/{coords}")
        on_disk = store_mod.ShardIndex.from_shard_bytes(shard, idx.offsets.shape)
        np.testing.assert_array_equal(on_disk.offsets, idx.offsets)  # marker == the zarr shard index
        np.testing.assert_array_equal(on_disk.nbytes, idx.nbytes)
        block = (slice(None), 0, 1, 0) if name == "embedding" else (slice(None), 1, 0)
        offs, nbs = idx.offsets[block], idx.nbytes[block]
        have = offs != np.uint64(store_mod.MISSING_CHUNK)
        assert have.sum() >= 5  # a year of dates spreads over many 6-day chunks
        o, n = offs[have].astype(np.int64), nbs[have].astype(np.int64)
        np.testing.assert_array_equal(o[1:], o[:-1] + n[:-1])  # contiguous, in time order
        damaged = shard[:-3] + bytes([shard[-3] ^ 0xFF]) + shard[-2:]
        with pytest.raises(StoreError, match="checksum"):
            store_mod.ShardIndex.from_shard_bytes(damaged, idx.offsets.shape)


def test_series_reader_equals_zarr_and_reads_three_objects(local_store, tmp_path):
    st, units = local_store
    _written(st, units)
    arr = zarr.open_group(st.root, mode="r")["utm32N"]
    emb, flags = arr["embedding"], arr["flags"]
    reader = store_mod.SeriesReader(st)
    counting = CountingFS(reader.fs)
    reader.fs = counting
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, 64, 12), rng.integers(0, 128, 12)
    d0, d1 = 6 * 366 + 17, 6 * 366 + 290  # not aligned to chunks
    got = reader.series("utm32N", rows, cols, d0, d1)
    assert got is not None
    for r, c, s in zip(rows, cols, got, strict=True):
        f = np.asarray(flags[d0:d1, r, c])
        t = np.flatnonzero(f & Flag.VALID)
        assert t.size > 0
        np.testing.assert_array_equal(s.days, t + d0)
        np.testing.assert_array_equal(s.codes, np.asarray(emb[d0:d1, :, r, c])[t])
        np.testing.assert_array_equal(s.flags, f[t])
    # one pixel, one year, a reader that has not seen the unit: marker + one range per array
    reader.clear_cache()
    counting.reads = 0
    (one,) = reader.series("utm32N", np.array([5]), np.array([70]), 6 * 366, 7 * 366)
    assert counting.reads == 3 and one.days.size > 10
    counting.reads = 0
    reader.series("utm32N", np.array([40]), np.array([100]), 6 * 366, 7 * 366)  # same unit, marker cached
    assert counting.reads == 2
    # the generic zarr path still reads a tile-date
    day = int(one.days[0])
    assert (np.asarray(emb[day, :, 0:64, 64:128]) != FILL_CODE).any()


def test_series_reader_skips_units_not_done_and_defers_old_markers(local_store):
    st, units = local_store
    _written(st, units)
    reader = store_mod.SeriesReader(st)
    st.fs.rm_file(f"{st.root}/_units/utm32N/{units[1].id}.json")  # unit 1 no longer done
    a, b = reader.series("utm32N", np.array([3, 3]), np.array([3, 67]), 6 * 366, 7 * 366)
    assert a.days.size > 0 and b.days.size == 0  # a unit without its marker is never read
    path = f"{st.root}/_units/utm32N/{units[0].id}.json"
    doc = json.loads(st.fs.cat_file(path))
    del doc["shard_index"]  # a unit written before markers held the index
    st.fs.pipe_file(path, json.dumps(doc).encode())
    reader.clear_cache()
    assert reader.series("utm32N", np.array([3]), np.array([3]), 6 * 366, 7 * 366) is None
    (early,) = reader.series("utm32N", np.array([3]), np.array([3]), 0, 10)  # a period never planned
    assert early.days.size == 0 and early.codes.shape == (0, 7)


def test_encode_shard_is_bitwise_reproducible(monkeypatch):
    """Blosc's own threads emit blocks in finishing order; shards must not depend on that (resumed jobs)."""
    import numcodecs.blosc

    # zarr's import turns them off for the whole process, but a writer that has not imported zarr yet
    # (the first unit a fresh Ray worker writes) has numcodecs' default: on in the main thread
    monkeypatch.setattr(numcodecs.blosc, "use_threads", None)
    rng = np.random.default_rng(0)
    chunks = {(c, 0, 0, 0): (rng.normal(size=(61, 7, 64, 64)) * 100).astype(np.uint16) for c in range(4)}
    outs = {store_mod.encode_shard(chunks, (6, 1, 1, 1), cfg=CFG, fill_value=FILL_CODE)[0] for _ in range(30)}
    assert len(outs) == 1
    shard = outs.pop()
    idx = store_mod.ShardIndex.from_shard_bytes(shard, (6, 1, 1, 1))
    for c in range(4):  # each chunk decodes back, where the index says
        o, n = int(idx.offsets[c, 0, 0, 0]), int(idx.nbytes[c, 0, 0, 0])
        got = store_mod.decode_chunk(shard[o : o + n], (61, 7, 64, 64), np.uint16, checksum=True)
        np.testing.assert_array_equal(got, chunks[(c, 0, 0, 0)])
    assert not idx.present((5, 0, 0, 0))


def _flip(st, path, offset):
    data = bytearray(st.fs.cat_file(path))
    data[offset] ^= 0x10
    st.fs.pipe_file(path, bytes(data))


def test_a_flipped_bit_in_a_chunk_is_never_read_back_as_values(local_store):
    """Every chunk carries a crc32c: the series reader and zarr both refuse a damaged one."""
    st, units = local_store
    assert st.checksummed and st.attrs["embedder:chunk_checksum"] == store_mod.CHUNK_CHECKSUM
    _written(st, units)
    reader = store_mod.SeriesReader(st)
    row, col, d0, d1 = 40, 10, 6 * 366, 7 * 366  # unit 0, spatial block (1, 0)
    (before,) = reader.series("utm32N", np.array([row]), np.array([col]), d0, d1)
    marker = json.loads(st.fs.cat_file(f"{st.root}/_units/utm32N/{units[0].id}.json"))
    idx = store_mod.ShardIndex.from_json(marker["shard_index"]["embedding"])
    c = int(np.flatnonzero(idx.offsets[:, 0, 1, 0] != np.uint64(store_mod.MISSING_CHUNK))[2])
    o, n = int(idx.offsets[c, 0, 1, 0]), int(idx.nbytes[c, 0, 1, 0])
    _flip(st, f"{st.root}/utm32N/embedding/c/6/0/0/0", o + n // 2)  # inside the compressed payload
    reader.clear_cache()
    with pytest.raises(store_mod.CorruptChunkError) as err:
        reader.series("utm32N", np.array([row]), np.array([col]), d0, d1)
    e = err.value
    assert e.array == "utm32N/embedding" and e.key.startswith("c/6/0/0/0") and e.unit == units[0].id
    assert "checksum" in str(e) and "embedder verify" in str(e) and "--repair" in str(e)
    # another block of the same shard is intact and still reads
    (other,) = reader.series("utm32N", np.array([5]), np.array([5]), d0, d1)
    assert other.days.size > 0 and before.days.size > 0
    # the zarr path (xarray, the API) checks the same crc32c and raises instead of returning values
    arr = zarr.open_group(st.root, mode="r")["utm32N"]["embedding"]
    day = c * CFG.chunk_days + 6 * 366
    with pytest.raises(Exception, match=r"(?i)checksum"):
        np.asarray(arr[day : day + CFG.chunk_days, :, 32:64, 0:32])


def test_undecodable_chunk_and_stores_without_checksums():
    """A chunk Blosc cannot decode is a CorruptChunkError too; unchecked (older) chunks still decode."""
    import google_crc32c

    rng = np.random.default_rng(1)
    chunk = (rng.normal(size=(6, 7, 8, 8)) * 100).astype(np.uint16)
    shard, idx = store_mod.encode_shard({(0, 0, 0, 0): chunk}, (1, 1, 1, 1), cfg=CFG, fill_value=FILL_CODE)
    n = int(idx.nbytes[0, 0, 0, 0])
    ref = store_mod.ChunkRef("gs://b/s.zarr", "utm32N/embedding", "c/0/0/0/0", "u1")
    good = shard[:n]
    np.testing.assert_array_equal(store_mod.decode_chunk(good, chunk.shape, np.uint16, checksum=True), chunk)
    garbage = bytes(16) + good[16:-4]
    with pytest.raises(store_mod.CorruptChunkError, match=r"cannot be decoded|decodes to"):
        store_mod.decode_chunk(
            garbage + google_crc32c.value(garbage).to_bytes(4, "little"),
            chunk.shape,
            np.uint16,
            checksum=True,
        )
    with pytest.raises(
        store_mod.CorruptChunkError,
        match=r"utm32N/embedding/c/0/0/0/0 in store 'gs://b/s\.zarr'.*\(here u1\)",
    ):
        store_mod.decode_chunk(
            good[:-1] + bytes([good[-1] ^ 1]), chunk.shape, np.uint16, checksum=True, ref=ref
        )
    old, _ = store_mod.encode_shard(
        {(0, 0, 0, 0): chunk}, (1, 1, 1, 1), cfg=CFG, fill_value=FILL_CODE, checksum=False
    )
    assert len(old) == len(shard) - 4
    np.testing.assert_array_equal(
        store_mod.decode_chunk(old[: n - 4], chunk.shape, np.uint16, checksum=False), chunk
    )
