"""The main job on the embedded default: ``make demo``.

Runs the whole product end to end on the synthetic sample region, the way a cluster user would: a local
Ray head node and an object-storage emulator (fake-gcs-server) are started on 127.0.0.1, every heavy
step is submitted with ``ray job submit``, and both are stopped again at the end (also on Ctrl-C or
failure). Stages: sample region -> training shards -> stage 1 (S1, S2 autoencoders) -> stage 2 (fusion)
-> embedding the region into a store in the emulator's bucket through gcsfs -> verify + STAC -> a local
copy of the store for the printed query commands -> training-curve figures -> summary. The training
stages fine-tune the committed CPU-preset weights (``weights/``, ``make weights``; configs in
``configs/demo/``): from scratch, nothing converges in a demo's minutes (docs/convergence.md).

Each stage records in ``OUT/demo-state.json`` that it is done, with a fingerprint of its inputs, so a
second run resumes; ``--fresh`` starts over. The emulator keeps its objects in ``OUT/gcs`` so the store
survives between runs. The same command line with ``--catalog planetary-computer --store gs://...``
(and a ``--region``) is the production run: then no emulator is started.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = Path(__file__).resolve().parent / "configs"
DEMO_BUCKET = "embedder-demo"


class _State:
    """Done-stages ledger in ``OUT/demo-state.json``: stage name -> input fingerprint and results."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def done(self, stage: str, fingerprint: str) -> dict[str, Any] | None:
        entry = self.data.get(stage)
        return entry if entry and entry.get("fingerprint") == fingerprint else None

    def mark(self, stage: str, fingerprint: str, result: dict[str, Any]) -> None:
        self.data[stage] = {"fingerprint": fingerprint, **result}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


class _Runner:
    """Runs stages with timing, progress lines and the resume ledger."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.timings: dict[str, float | None] = {}  # None: reused from an earlier run
        self.chain = ""  # fingerprint chain: a redone stage invalidates every later one

    def stage(self, name: str, key: Any, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        self.chain = json.dumps([self.chain, name, key], default=str)
        fingerprint = _sha(self.chain)
        prior = self.state.done(name, fingerprint)
        if prior is not None:
            print(f"\n== {name}: done in an earlier run, reused (--fresh to redo)", flush=True)
            self.timings[name] = None
            return prior
        print(f"\n== {name}", flush=True)
        t0 = time.perf_counter()
        result = run()
        self.timings[name] = time.perf_counter() - t0
        self.state.mark(name, fingerprint, result)
        print(f"   {name}: done in {self.timings[name]:.1f} s", flush=True)
        return result


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="working folder (default: demo-out)")
    p.add_argument("--size-px", type=int, default=64, help="sample-region scene size in pixels (default 64)")
    # Default: one store period (blocks start 2022-01-06) that still crosses S2 baseline 04.00 (2022-01-25).
    p.add_argument("--start", default="2022-01-10", help="period start YYYY-MM-DD (default 2022-01-10)")
    p.add_argument("--end", default="2022-06-30", help="period end YYYY-MM-DD (default 2022-06-30)")
    p.add_argument("--seed", type=int, default=42, help="sample-region seed")
    p.add_argument("--epochs", type=int, default=4, help="epochs per training stage (default 4)")
    p.add_argument(
        "--catalog",
        default=None,
        help="catalog instead of the sample region: 'planetary-computer', a STAC API URL or a catalog.json "
        "(needs --region)",
    )
    p.add_argument(
        "--region", default=None, help="region to embed with --catalog (bbox 'lon0,lat0,lon1,lat1')"
    )
    p.add_argument(
        "--store",
        default=None,
        help=f"store URL (default: gs://{DEMO_BUCKET}/store.zarr in a local fake-gcs-server; a real gs:// or "
        "s3:// URL uses real object storage with credentials from the environment)",
    )
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray head node (default 2)")
    p.add_argument(
        "--smallest", action="store_true", help="the smallest end-to-end run (tests): 32 px, 1 epoch"
    )
    p.add_argument("--fresh", action="store_true", help="start over: delete OUT first")
    p.add_argument(
        "--no-gpp",
        dest="gpp",
        action="store_false",
        help="skip the GPP-at-flux-towers stage (about 1.5 minutes; the report then says GPP is missing)",
    )
    return p


@contextlib.contextmanager
def _emulator(root: Path | None) -> Iterator[tuple[str, dict[str, str], dict[str, Any]]]:
    """The demo bucket in fake-gcs-server (persisted under ``root``), or nothing for real storage."""
    if root is None:
        yield "", {}, {}
        return
    from embedder.testing.objstore import fake_gcs

    root.mkdir(parents=True, exist_ok=True)
    with fake_gcs(bucket=DEMO_BUCKET, data_dir=root) as gcs:
        print(
            f"[storage] fake-gcs-server at {gcs.endpoint_url}, bucket {gcs.url} (data in {root})", flush=True
        )
        yield gcs.url, dict(gcs.env), dict(gcs.storage_options)


def _template(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CONFIGS / "smoke" / name).read_text())
    return dict(data)


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(cmd: list[str], *, env: dict[str, str] | None = None) -> str:
    """Run a local command (the CLI, as a user would), streaming its output; raise on failure."""
    print("   $ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    from ray_jobs.local_cluster import local_ray_cluster, submit_job

    args = _parser().parse_args(argv)
    # SIGTERM (a killed job, CI timeout) unwinds like Ctrl-C, so the cluster and emulator are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.catalog is not None and args.region is None:
        print("--catalog needs --region (a bbox 'lon0,lat0,lon1,lat1' to embed)", file=sys.stderr)
        return 2
    if args.smallest:
        args.size_px, args.epochs = 32, 1
        args.start, args.end = "2022-01-10", "2022-04-30"  # inside one store period (from 2022-01-06)
    out: Path = args.out.resolve()
    if args.fresh and out.exists():
        print(f"--fresh: removing {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    runner = _Runner(_State(out / "demo-state.json"))
    t_all = time.perf_counter()
    py = sys.executable
    print(
        "embedder demo: sample region -> shards -> stage 1 (S1, S2) -> fusion -> embed into a store in "
        "object storage -> verify -> figures"
    )

    # 1. the sample region (a local STAC catalog of COGs in two UTM zones)
    region_dir = out / "region"

    def make_region() -> dict[str, Any]:
        from embedder.config import SampleRegionConfig
        from embedder.geo import parse_date
        from embedder.sample import write_sample_region

        cfg = dataclasses.replace(
            SampleRegionConfig(),
            size_px=args.size_px,
            start=parse_date(args.start, name="--start"),
            end=parse_date(args.end, name="--end"),
            seed=args.seed,
        )
        if region_dir.exists():
            shutil.rmtree(region_dir)
        region = write_sample_region(region_dir, cfg=cfg, progress=True)
        return {"catalog": str(region.catalog_path), "manifest": str(region.manifest_path)}

    if args.catalog is None:
        region = runner.stage("sample region", [args.size_px, args.start, args.end, args.seed], make_region)
        catalog, region_arg = region["catalog"], region["manifest"]
    else:
        catalog, region_arg = args.catalog, args.region

    cfg_dir = out / "configs"
    shard_root, runs = out / "shards", out / "runs"
    emulator_root = None if args.store else out / "gcs"
    with contextlib.ExitStack() as stack:
        bucket, env, storage_options = stack.enter_context(_emulator(emulator_root))
        store_url = args.store or f"{bucket}/store.zarr"
        cluster = stack.enter_context(local_ray_cluster(num_cpus=args.num_cpus, env=env))

        def submit(module: str, *extra: str) -> str:
            # the head node was started with `env`, so every job driver and worker inherits it
            return submit_job(cluster, [py, "-m", module, *extra], working_dir=REPO_ROOT)

        # 2. training shards (Ray CPU tasks, resumable per cube)
        def shards() -> dict[str, Any]:
            cfg = _template("build_shards.yaml")
            cube_px = max(16, args.size_px // 2)
            cfg.update(
                catalog=catalog,
                shard_root=str(shard_root),
                start=args.start,
                end=args.end,
                cube_size_px=cube_px,
            )
            if args.catalog is None:
                cfg["region_manifest"] = region_arg
            submit("ray_jobs.build_shards", "--config", str(_write_yaml(cfg_dir / "build_shards.yaml", cfg)))
            from embedder.data.shards import summarize_shards

            return {"shards": summarize_shards(str(shard_root))}

        runner.stage("training shards", [catalog, args.start, args.end], shards)

        # 3. stage 1: one autoencoder per sensor; 4. stage 2: fusion. Both fine-tune the committed
        # CPU-preset weights (weights/, `make weights`): training from scratch does not converge in minutes.
        weights = _weights()

        def stage1(sensor: str) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                cfg = yaml.safe_load((CONFIGS / "demo" / f"train_modality_{sensor}.yaml").read_text())
                cfg["init_checkpoint"] = str(weights[sensor])
                path = _write_yaml(cfg_dir / f"train_modality_{sensor}.yaml", cfg)
                submit(
                    "ray_jobs.train_modality", "--sensor", sensor, "--config", str(path),
                    "--shard-root", str(shard_root), "--storage-path", str(runs),
                    "--name", f"stage1-{sensor}", "--max-epochs", str(args.epochs),
                )  # fmt: skip
                return {"run": str(runs / f"stage1-{sensor}"), "best": _best(runs / f"stage1-{sensor}")}

            return run

        stamp = _weights_stamp(weights)
        results = {s: runner.stage(f"stage 1 {s}", [args.epochs, stamp], stage1(s)) for s in ("s1", "s2")}

        def fusion() -> dict[str, Any]:
            cfg = yaml.safe_load((CONFIGS / "demo" / "train_fusion.yaml").read_text())
            cfg["init_checkpoint"] = str(weights["fusion"])
            path = _write_yaml(cfg_dir / "train_fusion.yaml", cfg)
            submit(
                "ray_jobs.train_fusion", "--config", str(path),
                "--shard-root", str(shard_root), "--storage-path", str(runs), "--name", "stage2-fusion",
                "--max-epochs", str(args.epochs),
                "--stage1", f"s1={results['s1']['run']}", "--stage1", f"s2={results['s2']['run']}",
            )  # fmt: skip
            return {"run": str(runs / "stage2-fusion"), "best": _best(runs / "stage2-fusion")}

        results["fusion"] = runner.stage("stage 2 fusion", [args.epochs, stamp], fusion)

        # 5. embed the region into the store (Ray Data) and verify it
        def embed() -> dict[str, Any]:
            from ray_jobs.train_common import resolve_stage1_checkpoint

            ckpt = resolve_stage1_checkpoint(
                results["fusion"]["run"], storage_options={}, local_dir=out / "model"
            )
            cfg = _template("embed.yaml")
            cfg.update(
                catalog=catalog, store=store_url, region=region_arg, start=args.start, end=args.end,
                checkpoint=str(ckpt), storage_options=storage_options, progress=True,
            )  # fmt: skip
            # one tile per sample scene (scenes are snapped to the tile grid of their own size)
            # A briefly trained model has embeddings with small spread (std ~0.01): a finer quantisation
            # step keeps the store's error under 1 % of each feature's std (checked by verify).
            cfg["store_layout"] = {
                **cfg.get("store_layout", {}),
                "tile_px": args.size_px,
                "chunk_px": args.size_px,
                "quant_step": 1.0 / 4096,
            }
            summary_path = out / "embed-summary.json"
            submit(
                "ray_jobs.embed", "--config", str(_write_yaml(cfg_dir / "embed.yaml", cfg)),
                "--summary-json", str(summary_path),
            )  # fmt: skip
            _run([py, "-m", "embedder.cli", "verify", store_url], env=env)
            return {"checkpoint": str(ckpt), "summary": json.loads(summary_path.read_text())}

        embedded = runner.stage("embed region into store", [store_url, args.size_px, "q1/4096"], embed)

        # 6. a local copy of the store for the query commands (the emulator stops with the demo)
        local_store = out / "store.zarr"

        def mirror() -> dict[str, Any]:
            import fsspec

            fs, root = fsspec.core.url_to_fs(store_url, **storage_options)
            if local_store.exists():
                shutil.rmtree(local_store)
            fs.get(root, str(local_store), recursive=True)
            nbytes = sum(f.stat().st_size for f in local_store.rglob("*") if f.is_file())
            return {"local_store": str(local_store), "bytes": nbytes}

        copy = runner.stage("local copy of the store", [store_url], mirror)

    # 7. GPP at the flux towers through the fine-tuned model (the report's GPP section and its gate)
    gpp_dir = out / "gpp"

    def gpp() -> dict[str, Any]:
        if gpp_dir.exists():
            shutil.rmtree(gpp_dir)
        # every Sentinel-era tower (embedder.evaluation.towers.TOWER_SITES); two with --smallest
        sites = ["--sites", *GPP_SITES_SMALLEST] if args.smallest else []
        _run(
            [py, "-m", "embedder.cli", "gpp-towers", str(gpp_dir), "--checkpoint", embedded["checkpoint"],
             "--years", *GPP_YEARS, "--size-px", str(GPP_SCENE_PX), "--split", "temporal", *sites]
        )  # fmt: skip
        return {"metrics": str(gpp_dir / "metrics.md")}

    gpp_result = None
    if args.gpp:
        gpp_result = runner.stage("GPP at flux towers", [embedded["checkpoint"], args.smallest], gpp)

    # 8. figures
    figures = out / "figures"

    def curves() -> dict[str, Any]:
        figures.mkdir(parents=True, exist_ok=True)
        made = []
        for name in ("stage1-s1", "stage1-s2", "stage2-fusion"):
            png = figures / f"curves-{name}.png"
            _run([py, "-m", "embedder.cli", "curves", str(runs / name), "--out", str(png)])
            made.append(str(png))
        # the run report: curves, S2 true colour beside PCA-RGB embedding maps, land-cover probe
        _run([py, "-m", "embedder.cli", "report", str(out)])
        made.append(str(out / "report" / "report.md"))
        return {"figures": made}

    figs = runner.stage("figures and report", None, curves)

    # 9. summary
    total = time.perf_counter() - t_all
    summary = embedded["summary"]
    print("\n== summary")
    for name, secs in runner.timings.items():
        print(f"   {name:<26} " + ("  reused" if secs is None else f"{secs:8.1f} s"))
    print(f"   {'total':<26} {total:8.1f} s")
    for key in ("s1", "s2", "fusion"):
        best = results[key]["best"]
        mae, floor = best.get("centre_mae"), best.get("val_floor_frame_mean")
        verdict = (
            ""
            if floor is None
            else ("  learned" if best.get("learned") else "  NOT LEARNED: above its floor")
        )
        print(
            f"   centre MAE {key:<7} (held-out cubes, [0, 1] units): {mae if mae is None else f'{mae:.4f}'}"
            f"   validation {best.get('val_centre_mae', float('nan')):.4f} vs frame-mean floor "
            f"{floor if floor is None else f'{floor:.4f}'}{verdict}"
        )
    print(f"   pixel-dates embedded: {summary.get('pixel_dates')}  ({summary.get('units_written')} units)")
    print(f"   store: {store_url}  ({copy['bytes'] / 1e6:.2f} MB; local copy {local_store})")
    print(f"   figures: {', '.join(figs['figures'])}")
    if gpp_result is not None:
        bold = Path(gpp_result["metrics"]).read_text().split("**")  # the verdict is the bold line
        print(f"   GPP at flux towers: {bold[1] if len(bold) > 2 else gpp_result['metrics']}")
    print("\nQuery and serve the store:")
    lon, lat = _probe_point(region_arg)
    print(f"   {py} -m embedder.cli probe {local_store} {lon:.5f} {lat:.5f}")
    print(f"   {py} -m embedder.cli verify {local_store}")
    print(f"   {py} -m embedder.cli serve {local_store} --port 8765")
    return 0


GPP_SITES_SMALLEST = ("CH-Aws", "ES-LM2")
"""``--smallest``: two grassland towers (the test checks the stage and the report, not the figures)."""
GPP_YEARS = ("2019", "2020")
"""Train on 2019, evaluate 2020 (``bench/quality.py`` runs the full 2017-2020 test)."""
GPP_SCENE_PX = 24
"""Tower scene side, px: the 15 px window leaves a 10 px embedded core around the 5 px feature disc."""

WEIGHTS_DIR = REPO_ROOT / "weights"
"""The committed CPU-preset weights the demo fine-tunes (``make weights`` regenerates them)."""


def _weights() -> dict[str, Path]:
    """``{s1, s2, fusion}`` -> committed weight files; a clear error when one is missing."""
    files = {name: WEIGHTS_DIR / f"{name}.pt" for name in ("s1", "s2", "fusion")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"weights {missing} are missing; run `make weights` to regenerate them")
    return files


def _weights_stamp(files: dict[str, Path]) -> str:
    from embedder.checkpoints import checkpoint_digest

    return ",".join(f"{n}:{checkpoint_digest(p)}" for n, p in sorted(files.items()))


def _best(run: Path) -> dict[str, Any]:
    path = run / "best.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    metrics = data.get("test") or data.get("val") or {}
    return {"centre_mae": metrics.get("centre_mae"), "epoch": data.get("epoch"), **data}


def _probe_point(region_arg: str) -> tuple[float, float]:
    """The centre of the first scene (sample region) or of the bbox."""
    from embedder.geo import BBox

    path = Path(region_arg)
    if path.is_file():
        from embedder.sample import read_region_manifest

        return BBox.parse(read_region_manifest(path.parent).scenes[0].bbox_lonlat).centre
    return BBox.parse(region_arg).centre


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
