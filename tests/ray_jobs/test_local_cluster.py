import sys
from pathlib import Path

import pytest

from ray_jobs.local_cluster import JobFailedError, _pids_of, local_ray_cluster, submit_job

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


def test_submit_passes_env_and_reports_failure(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text(
        "import os, ray\nray.init()\nprint('CPUS', int(ray.cluster_resources()['CPU']), os.environ['PROBE'])\n"
    )
    (tmp_path / "bad.py").write_text("raise SystemExit('boom: bad input 42')\n")
    with local_ray_cluster(log=False) as cluster:
        logs = submit_job(
            cluster, [sys.executable, "ok.py"], working_dir=tmp_path, env={"PROBE": "x1"}, stream=False
        )
        assert "CPUS 2 x1" in logs
        with pytest.raises(JobFailedError, match="boom: bad input 42"):
            submit_job(cluster, [sys.executable, "bad.py"], working_dir=tmp_path, stream=False)
        temp_dir = cluster.temp_dir
        assert _pids_of(temp_dir)
    assert not _pids_of(temp_dir), "cluster processes survived the stop"
    assert not temp_dir.exists()
