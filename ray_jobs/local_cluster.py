"""A real local Ray cluster (``ray start --head``) and job submission, the way a cluster user works.

Used by the demo and by the tests whose feature is a job's submission. The cluster gets its own short
temp dir, so stopping it kills only its own processes (``ray stop`` would kill every Ray process of
the user, including other clusters on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["JobFailedError", "LocalRayCluster", "local_ray_cluster", "submit_job"]

_RAY = str(Path(sys.executable).with_name("ray"))


class JobFailedError(RuntimeError):
    """A submitted Ray job ended in a state other than SUCCEEDED."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class LocalRayCluster:
    """A running local head node."""

    address: str
    """Job-submission (dashboard) address, e.g. ``http://127.0.0.1:8265``."""
    gcs_address: str
    """GCS address for ``ray.init(address=...)``."""
    temp_dir: Path
    """The cluster's own temp dir (its processes are recognised by it)."""
    auth_env: dict[str, str]
    """Ray token-auth variables clients need (a fresh random token per cluster; never logged)."""


def _pids_of(temp_dir: Path, client_port: int | None = None) -> list[int]:
    """Process ids of this cluster: command line mentions ``temp_dir``, plus their descendants.

    The Ray client server does not mention the temp dir; it is found by its (unique) port.
    """
    patterns = [str(temp_dir)]
    if client_port is not None:
        patterns.append(f"ray.util.client.server.*--port={client_port} ")
    pids: set[int] = set()
    for pattern in patterns:
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
        pids |= {int(p) for p in out.stdout.split() if p.strip().isdigit()}
    frontier = set(pids)
    while frontier:
        kids = subprocess.run(
            ["pgrep", "-P", ",".join(map(str, frontier))], capture_output=True, text=True, check=False
        )
        frontier = {int(p) for p in kids.stdout.split() if p.strip().isdigit()} - pids
        pids |= frontier
    pids.discard(os.getpid())
    return sorted(pids)


def _stop(temp_dir: Path, client_port: int | None = None, *, grace_s: float = 3.0) -> None:
    """SIGTERM this cluster's processes, SIGKILL what is left after ``grace_s``, remove its temp dir."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        pids = _pids_of(temp_dir, client_port)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    shutil.rmtree(temp_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"  # a zombie has exited
    except (FileNotFoundError, IndexError):
        return False


@contextmanager
def local_ray_cluster(
    *, num_cpus: int = 2, env: dict[str, str] | None = None, log: bool = True
) -> Iterator[LocalRayCluster]:
    """Start ``ray start --head`` on 127.0.0.1 with free ports; stop it (only it) on exit, also on errors.

    ``env`` is added to the environment of the head node and therefore of every worker and job driver
    (e.g. object-storage emulator endpoints).
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    # Ray's token authentication, with a token of this cluster's own (not ~/.ray/auth_token).
    auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    # Jobs whose driver calls ray.init(runtime_env=...) get the job's env merged instead of refused.
    head_env = {**(env or {}), **auth_env, "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}
    gcs_port, dash_port, client_port = _free_port(), _free_port(), _free_port()
    cmd = [
        _RAY, "start", "--head", f"--num-cpus={num_cpus}", "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats", "--include-dashboard=true",
        f"--ray-client-server-port={client_port}",
        # Ray's agents default to fixed ports (52365, ...): a second cluster, or one started while the
        # last one's agents are still exiting, would lose its job agent ("No available agent").
        f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
        f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
    ]  # fmt: skip
    if log:
        print(f"[ray] starting a local head node (temp dir {temp_dir}) ...", flush=True)
    proc = subprocess.run(cmd, env=_base_env(head_env), capture_output=True, text=True, check=False)
    cluster = LocalRayCluster(
        address=f"http://127.0.0.1:{dash_port}",
        gcs_address=f"127.0.0.1:{gcs_port}",
        temp_dir=temp_dir,
        auth_env=auth_env,
    )
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"`ray start --head` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        _wait_for_dashboard(cluster.address, token=auth_env["RAY_AUTH_TOKEN"])
        if log:
            print(f"[ray] cluster up: dashboard/job API at {cluster.address}", flush=True)
        yield cluster
    finally:
        if log:
            print("[ray] stopping the local cluster ...", flush=True)
        _stop(temp_dir, client_port)


def _wait_for_dashboard(address: str, *, token: str, timeout_s: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    request = urllib.request.Request(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"})
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception as err:  # not up yet
            last = err
        time.sleep(0.5)
    raise RuntimeError(f"Ray job API at {address} did not come up within {timeout_s:.0f} s: {last}")


_SUBMIT_ATTEMPTS = 36  # x 5 s: a loaded head can take minutes to register its job agent


def _run_submit(
    cmd: list[str], client_env: dict[str, str], *, stream: bool, timeout_s: float, what: str
) -> tuple[int, str]:
    """Run ``ray job submit`` once, streaming its output; returns ``(exit code, output)``."""
    lines: list[str] = []
    start = time.monotonic()
    with subprocess.Popen(
        cmd, env=_base_env(client_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        for line in proc.stdout or ():
            lines.append(line)
            if stream:
                sys.stdout.write(line)
                sys.stdout.flush()
            if time.monotonic() - start > timeout_s:
                proc.kill()
                raise JobFailedError(f"job {what} exceeded {timeout_s:.0f} s")
        code = proc.wait()
    return code, "".join(lines)


def submit_job(
    cluster: LocalRayCluster | str,
    entrypoint: Sequence[str],
    *,
    working_dir: str | Path = ".",
    env: dict[str, str] | None = None,
    stream: bool = True,
    timeout_s: float = 3600.0,
) -> str:
    """``ray job submit`` an entry point (``[python, -m, module, ...]``) and wait; returns its logs.

    Raises :class:`JobFailedError` with the tail of the logs when the job does not succeed.
    """
    address = cluster.address if isinstance(cluster, LocalRayCluster) else cluster
    client_env = cluster.auth_env if isinstance(cluster, LocalRayCluster) else {}
    runtime_env = {"env_vars": {k: v for k, v in (env or {}).items()}}
    cmd = [
        _RAY, "job", "submit", "--address", address, "--working-dir", str(working_dir),
        "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint,
    ]  # fmt: skip
    for attempt in range(_SUBMIT_ATTEMPTS):
        code, logs = _run_submit(
            cmd, client_env, stream=stream, timeout_s=timeout_s, what=" ".join(entrypoint)
        )
        # The job agent of a freshly started head may not be ready yet: nothing was submitted, try again.
        if code != 0 and "No available agent to submit job" in logs and attempt + 1 < _SUBMIT_ATTEMPTS:
            time.sleep(5.0)
            continue
        break
    if code != 0 or "succeeded" not in logs:
        raise JobFailedError(f"job `{' '.join(entrypoint)}` failed (exit {code}):\n{logs[-4000:]}")
    return logs
