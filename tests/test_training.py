import dataclasses
import itertools
import json

import pytest
import torch

from embedder.checkpoints import (
    CheckpointMismatchError,
    load_autoencoder,
    load_checkpoint,
    load_fusion,
    save_checkpoint,
    unwrap,
)
from embedder.config import ConfigError, FusionConfig, ModelConfig, TrainConfig
from embedder.models import FusionModel, ModalityAutoencoder
from embedder.sensors import S1, S2
from embedder.training import (
    MONITOR,
    FusionObjective,
    ModalityObjective,
    build_optimizer,
    build_schedulers,
    fit,
    seed_everything,
    train_step,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SMALL = ModelConfig.small()
NO_DROPOUT = dataclasses.replace(SMALL, dropout=0.0, encoder_conv_dropout=0.0, decoder_conv_dropout=0.0)


def _batch(sensor, n, seed):
    """Smooth, plausible windows: a per-sample spectrum plus a moving spatial wave, some values masked."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 15), torch.linspace(0, 1, 15), indexing="ij")
    spectrum = torch.rand(n, 1, sensor.n_channels, 1, 1, generator=g) * 0.5 + 0.2
    amp = torch.rand(n, 11, 1, 1, 1, generator=g)
    x = (spectrum + 0.1 * amp * torch.sin(3 * xx + 2 * yy)).clamp(0, 1)
    mask = torch.rand(x.shape, generator=g) > 0.05
    mask[:, 5, :, 7, 7] = True
    gaps = torch.randint(1, 15, (n, 10), generator=g).float()
    return {sensor.name: x, f"{sensor.name}_mask": mask, f"{sensor.name}_gaps": gaps}


def test_one_batch_overfit():
    seed_everything(42)
    ae = ModalityAutoencoder(S2, cfg=NO_DROPOUT)  # small preset; dropout off to memorise one batch
    cfg = TrainConfig(lr=3e-3, warmup_steps=10)
    objective = ModalityObjective(S2)
    opt = build_optimizer(ae, cfg)
    warmup, _ = build_schedulers(opt, cfg)
    batch = _batch(S2, 2, seed=0)
    losses: list[float] = []
    for _ in range(60):  # bounded; typically about 25 steps
        metrics = train_step(ae, batch, objective=objective, optimizer=opt, warmup=warmup, cfg=cfg)
        losses.append(float(metrics["loss"]))
        if losses[-1] < losses[0] / 10:
            break
    assert min(losses) < losses[0] / 10, losses


def test_warmup_and_plateau_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    cfg = TrainConfig(warmup_steps=100, plateau_patience=2)
    opt = torch.optim.AdamW([param], lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup, plateau = build_schedulers(opt, cfg)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-7)  # 0.001 x 1e-4
    for _ in range(50):
        opt.step()
        warmup.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * (0.001 + 0.999 * 0.5))
    for _ in range(60):
        opt.step()
        warmup.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    for metric in (1.0, 1.0, 1.0):  # best, then 2 epochs without improvement: patience not exceeded
        plateau.step(metric)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    plateau.step(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.35e-4)
    fusion = TrainConfig.fusion()
    assert (fusion.warmup_steps, fusion.plateau_factor, fusion.plateau_patience, fusion.plateau_min_lr) == (
        30_000,
        0.3,
        9,
        3.5e-7,
    )


def test_fit_metrics_checkpoints_report_and_resume(tmp_path):
    seed_everything(0)
    ae = ModalityAutoencoder(S1, cfg=SMALL)
    train = [_batch(S1, 2, seed=i) for i in range(2)]
    val = [_batch(S1, 2, seed=10)]
    cfg = dataclasses.replace(TrainConfig.small(), max_epochs=2)
    reports = []
    result = fit(
        ae, train, val, objective=ModalityObjective(S1), cfg=cfg, run_dir=tmp_path, report=reports.append
    )
    assert result.epochs_run == 2 and not result.stopped_early
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1]
    for split in ("train", "val"):
        assert {"loss", MONITOR, "s1/centre_mae", "s1/surroundings_mae", "s1/mae"} <= set(lines[0][split])
    assert lines[1]["lr"] > lines[0]["lr"]  # warm-up per step
    assert [r.epoch for r in reports] == [0, 1] and reports[1].checkpoint == tmp_path / "last.pt"
    assert (tmp_path / "best.pt").is_file()
    ckpt = load_checkpoint(tmp_path / "last.pt", sensors=[S1], kind="modality")
    assert ckpt["sensors"] == {"s1": ["VV", "VH"]} and ckpt["epoch"] == 1
    assert ckpt["config"]["model"]["d_model"] == SMALL.d_model and ckpt["config"]["train"]["max_epochs"] == 2

    # The stage-1 checkpoint loads into a fresh model built from its own config: same outputs.
    loaded = load_autoencoder(tmp_path / "last.pt", "s1").eval()
    ae.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(val[0]["s1"], val[0]["s1_gaps"]), ae(val[0]["s1"], val[0]["s1_gaps"])
        )

    # Resume continues at epoch 2 with the optimiser and schedulers restored.
    more = fit(
        ModalityAutoencoder(S1, cfg=SMALL),
        train,
        val,
        objective=ModalityObjective(S1),
        cfg=dataclasses.replace(cfg, max_epochs=3),
        run_dir=tmp_path,
        resume_from=tmp_path / "last.pt",
    )
    assert [h["epoch"] for h in more.history] == [2]
    assert more.history[0]["lr"] == pytest.approx(ckpt["optimizer_state"]["param_groups"][0]["lr"])


def test_checkpoint_mismatch_errors(tmp_path):
    ae = ModalityAutoencoder(S1, cfg=SMALL)
    path = save_checkpoint(tmp_path / "s1.pt", ae, epoch=3)
    with pytest.raises(CheckpointMismatchError, match=r"holds sensors/bands \{'s1': \['VV', 'VH'\]\}.*'s2'"):
        load_autoencoder(path, S2)
    with pytest.raises(CheckpointMismatchError, match="holds a 'modality' model but a 'fusion'"):
        load_fusion(path)
    renamed = dataclasses.replace(S1, bands=("VV", "HH"))
    with pytest.raises(CheckpointMismatchError, match="HH"):
        load_autoencoder(path, renamed)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointMismatchError, match="not an embedder checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointMismatchError, match=r"garbage\.pt' is not a readable checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
    # A model of another size refuses the state with a clear message.
    with pytest.raises(CheckpointMismatchError, match="does not fit this model's size"):
        fit(
            ModalityAutoencoder(S1, cfg=dataclasses.replace(SMALL, d_model=48)),
            [],
            [],
            objective=ModalityObjective(S1),
            cfg=TrainConfig.small(),
            resume_from=path,
        )


def test_stage2_from_stage1_checkpoints_and_fusion_round_trip(tmp_path):
    torch.manual_seed(0)
    paths = {
        s.name: save_checkpoint(tmp_path / f"{s.name}.pt", ModalityAutoencoder(s, cfg=SMALL))
        for s in (S1, S2)
    }
    aes = {name: load_autoencoder(p, name) for name, p in paths.items()}
    fusion = FusionModel(aes, cfg=FusionConfig.small(freeze_modalities=True))
    saved = torch.load(paths["s2"], weights_only=True)["model_state"]
    for k, v in fusion.autoencoder("s2").state_dict().items():
        torch.testing.assert_close(v, saved[k])
    path = save_checkpoint(tmp_path / "fusion.pt", fusion)
    again = load_fusion(path).eval()
    batch = {**_batch(S1, 1, seed=1), **_batch(S2, 1, seed=2), "s1_delta_days": torch.tensor([3.0])}
    with torch.no_grad():
        torch.testing.assert_close(again.embed(batch), fusion.eval().embed(batch))
    assert again.cfg.freeze_modalities


class _ConstantMonitor(ModalityObjective):
    """Never improves: the validation centre MAE is reported as a constant."""

    def __call__(self, model, batch):
        loss, metrics = super().__call__(model, batch)
        metrics[MONITOR] = torch.tensor(0.5)
        return loss, metrics


def test_early_stopping(tmp_path):
    cfg = dataclasses.replace(TrainConfig.small(), early_stopping_patience=2, max_epochs=10)
    result = fit(
        ModalityAutoencoder(S1, cfg=SMALL),
        [_batch(S1, 2, seed=0)],
        lambda epoch: [_batch(S1, 2, seed=100 + epoch)],
        objective=_ConstantMonitor(S1),
        cfg=cfg,
    )
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 0


def test_ddp_wrapped_model_and_rank_averaged_metrics(tmp_path):
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ae = ModalityAutoencoder(S1, cfg=SMALL)
        ddp = torch.nn.parallel.DistributedDataParallel(ae)
        assert unwrap(ddp) is ae
        cfg = dataclasses.replace(TrainConfig.small(), max_epochs=1)
        fit(
            ddp,
            [_batch(S1, 2, seed=0)],
            [_batch(S1, 2, seed=1)],
            objective=ModalityObjective(S1),
            cfg=cfg,
            run_dir=tmp_path,
        )
        state = load_checkpoint(tmp_path / "last.pt")["model_state"]
        assert not any(k.startswith("module.") for k in state)
    finally:
        dist.destroy_process_group()


def test_bf16_autocast_step_keeps_float32_loss():
    seed_everything(0)
    ae = ModalityAutoencoder(S2, cfg=SMALL)
    cfg = dataclasses.replace(TrainConfig.small(), bf16=True)
    opt = build_optimizer(ae, cfg)
    batch = _batch(S2, 2, seed=0)
    metrics = train_step(ae, batch, objective=ModalityObjective(S2), optimizer=opt, warmup=None, cfg=cfg)
    assert metrics["loss"].dtype == torch.float32 and torch.isfinite(metrics["loss"])
    assert all(p.dtype == torch.float32 for p in ae.parameters())


@pytest.mark.parametrize("native", [False, True])
def test_bf16_training_on_a_cpu_without_bf16_instructions_warns(
    native: bool, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import warnings

    import embedder.inference

    monkeypatch.setattr(embedder.inference, "cpu_bf16_native", lambda: native)
    seed_everything(0)
    cfg = dataclasses.replace(TrainConfig.small(), bf16=True, max_epochs=1)
    data = [_batch(S1, 2, seed=0)]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit(ModalityAutoencoder(S1, cfg=SMALL), data, data, objective=ModalityObjective(S1), cfg=cfg)
    slow = [
        w for w in seen if issubclass(w.category, RuntimeWarning) and "TrainConfig.bf16" in str(w.message)
    ]
    assert len(slow) == (0 if native else 1)


# --- the converging recipe (issue 15): schedule, loss modes, standardisation, floors --------------------


def test_cosine_schedule_warms_up_decays_and_ends_training():
    from embedder.config import ConfigError

    param = torch.nn.Parameter(torch.zeros(1))
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, warmup_start_factor=0.1, schedule="cosine", total_steps=110,
                      min_lr_factor=0.02)  # fmt: skip
    opt = torch.optim.AdamW([param], lr=cfg.lr)
    sched, _ = build_schedulers(opt, cfg)
    lrs = []
    for _ in range(120):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[10] == pytest.approx(1e-3)  # end of warm-up: the peak
    assert lrs[60] == pytest.approx(1e-3 * (0.02 + 0.98 * 0.5))  # half-way down the cosine
    assert lrs[110] == pytest.approx(2e-5) and lrs[119] == pytest.approx(2e-5)  # the floor, then flat
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    with pytest.raises(ConfigError, match="total_steps"):
        TrainConfig(schedule="cosine", warmup_steps=100, total_steps=50)
    with pytest.raises(ConfigError, match="mae_warm_steps"):
        TrainConfig(loss="mae_warm")


def test_loss_modes_switch_ssim_and_sam_off():
    from embedder.training import loss_weights_at

    paper = S2.stage1_loss
    assert loss_weights_at(paper, TrainConfig(), 0) == paper
    mae = loss_weights_at(paper, TrainConfig(loss="mae"), 10_000)
    assert (mae.mae, mae.ssim, mae.sam, mae.centre_weight) == (paper.mae, 0.0, 0.0, paper.centre_weight)
    warm = TrainConfig(loss="mae_warm", mae_warm_steps=100)
    assert loss_weights_at(paper, warm, 99) == mae and loss_weights_at(paper, warm, 100) == paper
    assert (
        loss_weights_at(S1.stage1_loss, TrainConfig(loss="mae"), 0) == S1.stage1_loss
    )  # S1: MAE only anyway
    # the objective follows the step count of the scheduler: no SAM term in its metrics while MAE-only
    seed_everything(0)
    ae = ModalityAutoencoder(S2, cfg=SMALL)
    objective = ModalityObjective(S2)
    opt = build_optimizer(ae, warm)
    sched, _ = build_schedulers(opt, warm)
    metrics = train_step(
        ae, _batch(S2, 2, seed=0), objective=objective, optimizer=opt, warmup=sched, cfg=warm
    )
    assert "s2/sam" not in metrics and objective.loss.weights.sam == 0.0
    sched.last_epoch = 100
    metrics = train_step(
        ae, _batch(S2, 2, seed=0), objective=objective, optimizer=opt, warmup=sched, cfg=warm
    )
    assert "s2/sam" in metrics and objective.loss.weights == paper


def test_temporal_decay_option_reweights_the_window_dates():
    from embedder.training import loss_weights_at

    cfg = TrainConfig(temporal_decay=0.5)
    weights = loss_weights_at(S2.stage2_loss, cfg, 0)
    assert weights.temporal_decay == 0.5 and weights.centre_weight == S2.stage2_loss.centre_weight
    objective = FusionObjective([S1, S2])
    objective.schedule_loss(cfg, 0)
    part = objective.loss.parts["s2"]
    part(torch.zeros(1, 11, 10, 15, 15), torch.ones(1, 11, 10, 15, 15), torch.ones(1, 11, 10, 15, 15))
    w = part.weight_map  # rebuilt for the new decay: the date next to the centre weighs 0.5 / 1.75
    assert float(w[4, 0, 7, 7] / w[5, 0, 7, 7]) == pytest.approx(0.5 / 1.75, rel=1e-5)
    with pytest.raises(ConfigError, match=r"temporal_decay=1\.5"):
        TrainConfig(temporal_decay=1.5)


def test_fit_standardises_bands_logs_floors_and_learns(tmp_path, caplog):
    """A short run of the CPU recipe: statistics set from the data, floors in every line, loss falls."""
    seed_everything(0)
    cfg_model = dataclasses.replace(SMALL, standardize=True)
    ae = ModalityAutoencoder(S2, cfg=cfg_model)
    train = [_batch(S2, 8, seed=s) for s in range(6)]
    val = [_batch(S2, 8, seed=100 + s) for s in range(2)]
    cfg = dataclasses.replace(TrainConfig.cpu(total_steps=60), batch_size=8)
    result = fit(ae, train, val, objective=ModalityObjective(S2), cfg=cfg, run_dir=tmp_path)
    # statistics of the valid training values, kept in the checkpoint and used by a reloaded model
    mean, std = ae.band_stats()
    x = torch.cat([b["s2"] for b in train])
    m = torch.cat([b["s2_mask"] for b in train])
    want = torch.stack([x[:, :, c][m[:, :, c]].mean() for c in range(S2.n_channels)])
    torch.testing.assert_close(mean, want, atol=1e-5, rtol=1e-5)
    assert bool((std > 0).all()) and bool((std < 1).all())
    again = load_autoencoder(tmp_path / "best.pt", S2)
    torch.testing.assert_close(again.band_stats()[0], mean)
    # the run ends at total_steps (6 batches an epoch: 10 epochs), every line carries the floors
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == result.epochs_run == 10 and lines[-1]["step"] == 60
    assert set(lines[0]["floors"]["s2"]) == {"frame_mean", "temporal_mean", "pca_k"}
    assert lines[0]["val_vs_floor"] == pytest.approx(lines[0]["val"][MONITOR] / lines[0]["floor_frame_mean"])
    assert result.floors == lines[0]["floors"]
    # learned: the training loss fell below its start
    assert lines[-1]["train"]["loss"] < lines[0]["train"]["loss"]
    assert result.above_floor == (result.best_metric >= result.frame_mean_floor)


def test_fit_says_loudly_when_a_stage_ends_above_its_floor(tmp_path, caplog):
    seed_everything(0)
    ae = ModalityAutoencoder(S1, cfg=SMALL)
    cfg = dataclasses.replace(TrainConfig.small(), max_epochs=1, lr=1e-6)  # cannot learn anything
    with caplog.at_level("WARNING", logger="embedder.training"):
        result = fit(
            ae, [_batch(S1, 4, seed=1)], [_batch(S1, 4, seed=2)], objective=ModalityObjective(S1), cfg=cfg
        )
    assert result.above_floor
    assert "NOT LEARNED" in caplog.text and "frame-mean floor" in caplog.text
