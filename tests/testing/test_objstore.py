"""The object-storage emulators: real servers on 127.0.0.1, reachable by fsspec, zarr and subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from embedder.testing.objstore import EmulatorError, fake_gcs, moto_s3


@pytest.mark.parametrize("fixture", ["gcs_bucket", "s3_bucket"])
def test_round_trip_bytes_and_env(fixture, request):
    emu = request.getfixturevalue(fixture)
    assert emu.endpoint_url.startswith("http://127.0.0.1:")
    fs = emu.filesystem()
    fs.pipe(f"{emu.url}/a/b.txt", b"hello")
    assert fs.cat(f"{emu.url}/a/b.txt") == b"hello"
    assert fs.ls(f"{emu.url}/a", detail=False) == [f"{emu.bucket}/a/b.txt"]
    for k, v in emu.env.items():
        assert os.environ[k] == v


@pytest.mark.parametrize("fixture", ["gcs_bucket", "s3_bucket"])
def test_sharded_zarr_v3_partial_writes(fixture, request):
    """Zarr v3 sharding needs suffix byte ranges: partial shard writes and reads must be exact."""
    emu = request.getfixturevalue(fixture)
    url = f"{emu.url}/t.zarr"
    g = zarr.open_group(url, mode="w", storage_options=emu.storage_options, zarr_format=3)
    a = g.create_array(
        "e", shape=(8, 64, 64), chunks=(4, 16, 16), shards=(8, 32, 32), dtype="uint16", fill_value=0
    )
    x = np.random.default_rng(0).integers(1, 1000, (8, 64, 64)).astype("uint16")
    a[:, :32, :32] = x[:, :32, :32]
    a[:, 40:, :32] = x[:, 40:, :32]  # a partial shard: read-modify-write through the emulator
    a[:, :, 32:] = x[:, :, 32:]
    b = zarr.open_array(f"{url}/e", mode="r", storage_options=emu.storage_options)
    expect = x.copy()
    expect[:, 32:40, :32] = 0
    np.testing.assert_array_equal(b[:], expect)
    np.testing.assert_array_equal(b[3, 50:60, 5], expect[3, 50:60, 5])


def test_subprocess_reaches_gcs_with_env(gcs_bucket):
    gcs_bucket.filesystem().pipe(f"{gcs_bucket.url}/x.bin", b"\x01\x02")
    code = (
        "import fsspec, json, sys; so = json.loads(sys.argv[1]);"
        "print(fsspec.filesystem('gs', **so).cat(sys.argv[2]).hex())"
    )
    import json

    env = {k: v for k, v in os.environ.items() if k != "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"}
    env.update(gcs_bucket.env)
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(gcs_bucket.storage_options), f"{gcs_bucket.url}/x.bin"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "0102"


def test_servers_stop_and_env_is_restored():
    before = os.environ.get("STORAGE_EMULATOR_HOST")
    with fake_gcs(bucket="abc") as g:
        endpoint = g.endpoint_url
    assert os.environ.get("STORAGE_EMULATOR_HOST") == before
    import urllib.request

    with pytest.raises(OSError):
        urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=2)
    with moto_s3(bucket="xyz") as s:
        assert s.url == "s3://xyz"
    assert "AWS_ENDPOINT_URL_S3" not in os.environ or os.environ["AWS_ENDPOINT_URL_S3"] != s.endpoint_url


@pytest.mark.parametrize("bad", ["ab", "Upper", "under_score"])
def test_bad_bucket_name(bad):
    with pytest.raises(EmulatorError, match=bad), fake_gcs(bucket=bad):
        pass


def test_fake_gcs_data_dir_persists_across_restarts(tmp_path) -> None:
    from embedder.testing.objstore import fake_gcs

    with fake_gcs(bucket="keep", data_dir=tmp_path) as gcs:
        fs = gcs.filesystem()
        fs.pipe(f"{gcs.bucket}/a/b.txt", b"hello")
    with fake_gcs(bucket="keep", data_dir=tmp_path) as gcs:
        assert gcs.filesystem().cat(f"{gcs.bucket}/a/b.txt") == b"hello"
