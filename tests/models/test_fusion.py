import pytest
import torch

from embedder.config import FusionConfig, ModelConfig, TrainConfig
from embedder.models import FusionModel, GapRangeError, ModalityAutoencoder
from embedder.sensors import S1, S2
from embedder.training import FusionObjective, build_optimizer, build_schedulers, train_step

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SMALL = ModelConfig.small()


def _small_fusion(*, freeze=False, seed=0):
    torch.manual_seed(seed)
    aes = {"s1": ModalityAutoencoder(S1, cfg=SMALL), "s2": ModalityAutoencoder(S2, cfg=SMALL)}
    return FusionModel(aes, cfg=FusionConfig.small(freeze_modalities=freeze))


def _batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {"s1_delta_days": torch.randint(0, 6, (n,), generator=g).float()}
    for s in (S1, S2):
        x = torch.rand(n, 11, s.n_channels, 15, 15, generator=g)
        batch[s.name] = x
        batch[f"{s.name}_mask"] = torch.rand(x.shape, generator=g) > 0.1
        batch[f"{s.name}_gaps"] = torch.randint(1, 15, (n, 10), generator=g).float()
    return batch


def test_paper_fused_parameter_count_matches_spec():
    # SPEC 3/5: "about 7.75 M for the fused model" = 2 autoencoders + 313,055 fusion parameters.
    model = FusionModel({"s1": ModalityAutoencoder(S1), "s2": ModalityAutoencoder(S2)})
    assert sum(p.numel() for p in model.parameters()) == 7_751_213
    assert model.temporal.num_embeddings == 351 and model.sensor_type.num_embeddings == 2
    layer = model.transformer.layers[0]
    assert len(model.transformer.layers) == 2 and layer.norm_first and layer.self_attn.num_heads == 4
    assert layer.linear1.out_features == 256 and layer.dropout.p == 0.1
    assert model.project["s1"].in_features == 2 and model.project["s2"].in_features == 9
    assert model.heads["s1"].out_features == 2 and model.heads["s2"].out_features == 9


def test_embed_and_forward_shapes():
    model = _small_fusion()
    batch = _batch(3)
    emb = model.embed(batch)
    assert emb.shape == (3, 7) and (emb >= 0).all()
    recon = model(batch)
    assert set(recon) == {"s1", "s2"}
    assert recon["s1"].shape == (3, 11, 2, 15, 15) and recon["s2"].shape == (3, 11, 10, 15, 15)
    assert model.names == ("s1", "s2")  # FUSION_ORDER: S1 token 0, S2 token 1


def test_fuse_from_cached_tokens_matches_embed():
    model = _small_fusion().eval()
    batch = _batch(2)
    with torch.no_grad():
        z = {}
        for n in model.names:
            ae = model.autoencoder(n)
            frames = batch[n].reshape(-1, *batch[n].shape[2:])
            z[n] = ae.encode_tokens(ae.encode_frames(frames).reshape(2, 11, -1), batch[f"{n}_gaps"])
        torch.testing.assert_close(
            model.fuse(z, {"s1_delta_days": batch["s1_delta_days"]}), model.embed(batch)
        )


def test_embedding_independent_of_batch_composition():
    model = _small_fusion().eval()
    batch = _batch(4, seed=1)
    one = {k: v[1:2] for k, v in batch.items()}
    with torch.no_grad():
        torch.testing.assert_close(model.embed(one), model.embed(batch)[1:2], atol=1e-6, rtol=0)


def test_delta_changes_embedding_and_is_range_checked():
    model = _small_fusion().eval()
    batch = _batch(1)
    with torch.no_grad():
        a = model.embed(batch)
        b = model.embed({**batch, "s1_delta_days": batch["s1_delta_days"] + 4})
    assert not torch.allclose(a, b)
    with pytest.raises(GapRangeError, match="s1_delta_days"):
        model.embed({**batch, "s1_delta_days": torch.tensor([400.0])})


def test_rejects_bad_autoencoder_mapping():
    ae1 = ModalityAutoencoder(S1, cfg=SMALL)
    with pytest.raises(ValueError, match="built for sensor 's1'"):
        FusionModel({"s2": ae1})
    with pytest.raises(ValueError, match="subset of FUSION_ORDER"):
        FusionModel({"s3": ae1})
    with pytest.raises(ValueError, match="primary sensor"):
        FusionModel({"s1": ae1})


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "finetune"])
def test_freeze_modalities_modes(freeze):
    model = _small_fusion(freeze=freeze)
    cfg = TrainConfig.small()
    ae_before = _params(model.autoencoders)
    fusion_before = {k: v for k, v in _params(model).items() if not k.startswith("autoencoders.")}
    opt = build_optimizer(model, cfg)
    warmup, _ = build_schedulers(opt, cfg)
    model.train()
    assert model.autoencoders.training is (not freeze)  # frozen autoencoders stay in eval mode
    train_step(model, _batch(2), objective=FusionObjective([S1, S2]), optimizer=opt, warmup=warmup, cfg=cfg)
    for k, p in model.autoencoders.named_parameters():
        assert p.requires_grad is (not freeze)
        if freeze:
            assert p.grad is None, k
            assert torch.equal(p, ae_before[k]), k
    changed_ae = [k for k, p in model.autoencoders.named_parameters() if not torch.equal(p, ae_before[k])]
    assert bool(changed_ae) is (not freeze)
    after = dict(model.named_parameters())
    assert all(
        not torch.equal(after[k], v)
        for k, v in fusion_before.items()
        if k.startswith(("project", "to_embedding"))
    )
