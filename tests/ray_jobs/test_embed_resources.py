"""How the embed job sizes and sets up its actors: threads, the pool from the cluster's resources, precision."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from embedder.config import ConfigError
from embedder.inference import CACHE_BYTES, cpu_bf16_native
from ray_jobs.config import EmbedJobConfig
from ray_jobs.embed import (
    ACTOR_BASE_BYTES,
    EmbedActor,
    actor_memory_bytes,
    actor_pool,
    actor_threads,
    inference_params,
)

WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "fusion.pt"


def _cfg(**kw: Any) -> EmbedJobConfig:
    base: dict[str, Any] = {
        "catalog": "c", "store": "s", "region": "sample", "checkpoint": "ck",
        "start": dt.date(2021, 1, 1), "end": dt.date(2021, 12, 31),
    }  # fmt: skip
    return EmbedJobConfig(**(base | kw))


def test_threads_follow_the_cpus_the_actor_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBEDDER_TORCH_THREADS", raising=False)
    assert actor_threads(_cfg(actor_num_cpus=0.5)) == 1
    assert actor_threads(_cfg(actor_num_cpus=1.5)) == 2
    assert actor_threads(_cfg(actor_num_cpus=8.0)) == 8
    assert actor_threads(_cfg(actor_num_cpus=0.5, actor_threads=3)) == 3  # the documented override
    monkeypatch.setenv("EMBEDDER_TORCH_THREADS", "4")
    assert actor_threads(_cfg(actor_num_cpus=0.5, actor_threads=3)) == 4  # the environment wins
    monkeypatch.setenv("EMBEDDER_TORCH_THREADS", "two")
    with pytest.raises(ConfigError, match="'two'"):
        actor_threads(_cfg())


def test_pool_from_cluster_resources_when_max_actors_is_0() -> None:
    cpu = _cfg(max_actors=0, actor_num_cpus=1.0, read_num_cpus=1.0, write_num_cpus=0.25)
    assert actor_pool(cpu, {"CPU": 16.0}) == (1, 14)  # 16 - 1 read - 0.25 write = 14.75 -> 14 actors
    assert actor_pool(cpu, {"CPU": 2.0}) == (1, 1)  # never fewer than one
    # the per-core layout (docs/operations.md): 0.9 CPU and one thread an actor, small reads and writes
    per_core = _cfg(max_actors=0, actor_num_cpus=0.9, read_num_cpus=0.1, write_num_cpus=0.1)
    assert actor_pool(per_core, {"CPU": 2.0}) == (1, 2)
    assert actor_pool(per_core, {"CPU": 16.0}) == (1, 16)  # 15.8 / 0.9 = 17 would put 17 threads on 16 cores
    # half-CPU actors (the default) of one thread: one per core, not two
    assert actor_pool(_cfg(max_actors=0, actor_num_cpus=0.5), {"CPU": 16.0}) == (1, 16)
    # 2-thread actors of 1 CPU: 4 by the CPUs left, but 8 threads on 8 cores at most
    assert actor_pool(_cfg(max_actors=0, actor_num_cpus=1.0, actor_threads=2), {"CPU": 8.0}) == (1, 4)
    # and no more actors than Ray's memory holds at their cache bound + 1.5 GiB each
    gib = 2.0**30
    assert actor_memory_bytes(per_core) == CACHE_BYTES + ACTOR_BASE_BYTES  # cache_mb 0: the 4 GiB default
    assert actor_pool(per_core, {"CPU": 16.0, "memory": 64 * gib}) == (1, 11)  # 64 / 5.5 GiB
    assert actor_pool(per_core, {"CPU": 16.0, "memory": 128 * gib}) == (1, 16)  # then the cores bound it
    small_cache = _cfg(max_actors=0, actor_num_cpus=0.9, read_num_cpus=0.1, write_num_cpus=0.1, cache_mb=512)
    assert actor_pool(small_cache, {"CPU": 16.0, "memory": 64 * gib}) == (1, 16)  # 2 GiB each
    assert actor_pool(per_core, {"CPU": 2.0, "memory": 2 * gib}) == (1, 1)  # never fewer than one
    gpu = _cfg(max_actors=0, actor_num_gpus=1.0, actor_num_cpus=2.0, min_actors=2)
    assert actor_pool(gpu, {"CPU": 64.0, "GPU": 8.0}) == (2, 8)  # one per GPU
    assert actor_pool(gpu, {"CPU": 64.0}) == (1, 1)  # no GPU yet (autoscaling): one, which waits
    assert actor_pool(_cfg(min_actors=2, max_actors=5), {"CPU": 64.0}) == (2, 5)  # explicit bounds win


def test_bad_actor_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="actor_threads = -1"):
        _cfg(actor_threads=-1)
    with pytest.raises(ConfigError, match="actor_num_cpus = 0"):
        _cfg(actor_num_cpus=0.0)
    with pytest.raises(ConfigError, match="max_actors 0"):
        _cfg(min_actors=3, max_actors=2)
    with pytest.raises(ConfigError, match="frame_batch = -1"):
        _cfg(frame_batch=-1)
    with pytest.raises(ConfigError, match="token_batch = -1"):
        _cfg(token_batch=-1)
    with pytest.raises(ConfigError, match="cache_mb = -1"):
        _cfg(cache_mb=-1)


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="committed weights not present")
def test_actor_runs_the_precision_the_job_asks_for_and_the_store_records_it() -> None:
    import torch

    threads = torch.get_num_threads()
    try:  # the actor sets its process's threads; this test's process keeps its own
        cfg = _cfg(checkpoint=str(WEIGHTS), device="cpu", frame_bf16=True, keep_freed_memory=False)
        with (
            contextlib.nullcontext()
            if cpu_bf16_native()
            else pytest.warns(RuntimeWarning, match="frame_bf16")
        ):
            pred = EmbedActor(cfg).predictor  # an AVX2-only CPU is warned that bf16 is slow there
            direct = EmbedActor(
                dataclasses.replace(cfg, spectral=False, token_batch=50, cache_mb=64)
            ).predictor
    finally:
        torch.set_num_threads(threads)
    assert pred.frame_bf16 and not pred.bf16 and pred.device.type == "cpu"
    assert pred.spectral and not direct.spectral  # the CPU default, and the job's override
    assert pred.token_batch == {"s1": 496, "s2": 496}  # the committed weights: ModelConfig.cpu(), d_model 64
    assert direct.token_batch == {"s1": 50, "s2": 50}
    assert pred.cache_bytes == CACHE_BYTES and direct.cache_bytes == 64 * 2**20
    assert inference_params(dataclasses.replace(cfg, spectral=False, token_batch=50)) == inference_params(
        cfg
    )  # rounding only
    assert inference_params(cfg) == {"halo_px": 7, "bf16": False, "frame_bf16": True}
    assert "frame_bf16" not in inference_params(_cfg())  # off: the fingerprint of older stores is kept
