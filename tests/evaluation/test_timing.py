"""CpuMeter: own CPU vs the machine's, and when a wall-clock figure counts as a timing."""

from __future__ import annotations

import subprocess
import sys
import time

from embedder.evaluation.timing import FOREIGN_LIMIT, CpuMeter, is_timing


def _spin(cpu_seconds: float) -> None:
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_own_work_is_not_foreign_but_another_process_is() -> None:
    with CpuMeter(threads=1) as own:
        _spin(0.3)
    rec = own.record()
    assert rec["wall_s"] >= 0.29 and own.own_cpu_s >= 0.29
    assert rec["threads"] == 1 and rec["cpus"] >= 1
    # a process we do not wait for inside the block burns a core: that is someone else's load
    burner = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"]
    )
    try:
        time.sleep(0.5)  # let it start
        with CpuMeter(threads=rec["cpus"]) as shared:
            time.sleep(1.5)
    finally:
        burner.wait()
    busy = shared.record()
    assert busy["foreign_cpu_share"] >= 0.8 / busy["cpus"]  # about one core of all of them
    assert not busy["timed"] and not is_timing(busy)


def test_is_timing_needs_every_core_and_no_foreign_load() -> None:
    clean = {"cpus": 2, "threads": 2, "foreign_cpu_share": 0.01}
    assert is_timing(clean)
    assert not is_timing(clean | {"threads": 1})  # one thread of two cores is not the recipe's time
    assert not is_timing(clean | {"foreign_cpu_share": FOREIGN_LIMIT + 0.01})
    assert not is_timing(None) and not is_timing({})
    # an older record without a meter counts only when it says so (annotated from a session log)
    assert is_timing({"foreign_cpu_share": None, "timed": True}) and not is_timing(
        {"foreign_cpu_share": None}
    )
