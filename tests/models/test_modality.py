import dataclasses

import pytest
import torch

from embedder.config import ConfigError, ModelConfig
from embedder.models import GapRangeError, ModalityAutoencoder, day_positions
from embedder.sensors import S1, S2, SENSORS

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SMALL = ModelConfig.small()


def _inputs(sensor, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 11, sensor.n_channels, 15, 15, generator=g)
    gaps = torch.randint(1, 18, (batch, 10), generator=g).float()
    return x, gaps


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_paper_parameter_counts_match_spec():
    # SPEC 3: "about 3.7 M parameters per autoencoder". Measured, faithful layer by layer:
    s2 = ModalityAutoencoder(S2)
    s1 = ModalityAutoencoder(S1)
    assert _n_params(s2) == 3_726_103
    assert _n_params(s1) == 3_712_055
    # The widths of the paper configuration.
    assert s2.positions.num_embeddings == 201 and s2.positions.embedding_dim == 256
    layer = s2.transformer.layers[0]
    assert len(s2.transformer.layers) == 3 and layer.self_attn.num_heads == 8
    assert layer.linear1.out_features == 8 and layer.dropout.p == 0.25 and not layer.norm_first
    assert s2.frame_encoder.stem[0].out_channels == 149
    assert s2.to_bottleneck[0].out_features == 9 and s1.to_bottleneck[0].out_features == 2
    assert s2.token_reduce[0].out_features == 6 and s1.token_reduce[0].out_features == 7


def test_small_preset_is_a_few_tens_of_thousands():
    for sensor in SENSORS.values():
        assert 10_000 < _n_params(ModalityAutoencoder(sensor, cfg=SMALL)) < 100_000


def test_paper_model_shapes_one_sample():
    torch.manual_seed(0)
    ae = ModalityAutoencoder(S1).eval()
    x, gaps = _inputs(S1, 1)
    with torch.no_grad():
        x_hat, z = ae(x, gaps)
    assert x_hat.shape == x.shape and z.shape == (1, 2)


@pytest.mark.parametrize("sensor", [S1, S2], ids=lambda s: s.name)
def test_shapes_gradients_and_non_negative_bottleneck(sensor):
    torch.manual_seed(0)
    ae = ModalityAutoencoder(sensor, cfg=SMALL)
    x, gaps = _inputs(sensor, 2)
    tokens = ae.encode_frames(x.reshape(22, sensor.n_channels, 15, 15))
    assert tokens.shape == (22, SMALL.d_model)
    x_hat, z = ae(x, gaps)
    assert x_hat.shape == (2, 11, sensor.n_channels, 15, 15)
    assert z.shape == (2, sensor.bottleneck_dim) and (z >= 0).all()
    (x_hat - x).abs().mean().backward()
    for name, p in ae.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_encode_is_frames_then_tokens():
    torch.manual_seed(0)
    ae = ModalityAutoencoder(S2, cfg=SMALL).eval()
    x, gaps = _inputs(S2, 3)
    with torch.no_grad():
        tokens = ae.encode_frames(x.reshape(33, 10, 15, 15)).reshape(3, 11, -1)
        torch.testing.assert_close(ae.encode_tokens(tokens, gaps), ae.encode(x, gaps))


def test_embedding_independent_of_batch_composition():
    # SPEC 3.8 deviation: attention runs across time, never across the samples of a batch.
    torch.manual_seed(0)
    ae = ModalityAutoencoder(S2, cfg=SMALL).eval()
    x, gaps = _inputs(S2, 5, seed=1)
    with torch.no_grad():
        alone = ae.encode(x[2:3], gaps[2:3])
        among = ae.encode(x, gaps)[2:3]
        shuffled = ae.encode(x.flip(0), gaps.flip(0))[2:3]
        recon_alone = ae.decode(alone, gaps[2:3])
        recon_among = ae.decode(ae.encode(x, gaps), gaps)[2:3]
    torch.testing.assert_close(alone, among, atol=1e-6, rtol=0)
    torch.testing.assert_close(alone, shuffled, atol=1e-6, rtol=0)
    torch.testing.assert_close(recon_alone, recon_among, atol=1e-6, rtol=0)


def test_attention_mixes_time():
    # The bottleneck depends on every frame and on the day gaps (positional embedding).
    torch.manual_seed(0)
    ae = ModalityAutoencoder(S2, cfg=SMALL).eval()
    x, gaps = _inputs(S2, 1)
    with torch.no_grad():
        z = ae.encode(x, gaps)
        x2 = x.clone()
        x2[:, 0] = 1.0 - x2[:, 0]
        assert not torch.allclose(z, ae.encode(x2, gaps))
        assert not torch.allclose(z, ae.encode(x, gaps + 3))


def test_day_positions_and_errors():
    pos = day_positions(torch.tensor([[1.0, 2.0, 3.4]]), max_position_days=200)
    assert int(day_positions(torch.full((1, 10), 20.0), max_position_days=200).max()) == 200
    assert pos.tolist() == [[0, 1, 3, 6]]
    with pytest.raises(GapRangeError, match="201 entries"):
        day_positions(torch.full((1, 10), 21.0), max_position_days=200)
    with pytest.raises(GapRangeError, match=">= 0"):
        day_positions(torch.tensor([[1.0, -2.0]]), max_position_days=200)
    with pytest.raises(GapRangeError, match="non-finite"):
        day_positions(torch.tensor([[1.0, float("nan")]]), max_position_days=200)
    ae = ModalityAutoencoder(S1, cfg=SMALL)
    x, _ = _inputs(S1, 1)
    with pytest.raises(GapRangeError, match=r"s1 gaps sum to 300 days"):
        ae.encode(x, torch.full((1, 10), 30.0))
    with pytest.raises(GapRangeError, match=r"\[B, 10\]"):
        ae.encode(x, torch.ones(1, 9))
    with pytest.raises(ValueError, match=r"\[N, 2, 15, 15\]"):
        ae.encode_frames(torch.zeros(3, 10, 15, 15))


def test_model_config_validation():
    with pytest.raises(ConfigError, match="multiple of 16"):
        ModelConfig(d_model=100)
    with pytest.raises(ConfigError, match="n_heads = 3"):
        ModelConfig(n_heads=3)
    assert dataclasses.asdict(ModelConfig())["conv_channels"] == (149, 128, 64)


def test_standardize_option_round_trips_and_keeps_old_state_dicts() -> None:
    from embedder.models.blocks import BandScaler

    plain = ModalityAutoencoder(S2, cfg=ModelConfig.small())
    assert plain.band_stats() is None  # no buffers: checkpoints without the option load as before
    with pytest.raises(ValueError, match="standardize"):
        plain.set_band_stats(torch.zeros(10), torch.ones(10))
    scaler, inverse = BandScaler(3), BandScaler(3, inverse=True)
    for m in (scaler, inverse):
        m.set_stats(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.0, 2.0]))
    x = torch.rand(4, 3, 5, 5)
    torch.testing.assert_close(inverse(scaler(x)), x)
    assert float(scaler.std[1]) == pytest.approx(1e-6)  # a constant band does not divide by zero
    # with the option, encoder input and decoder output are (un)standardised per band
    ae = ModalityAutoencoder(S2, cfg=dataclasses.replace(ModelConfig.small(), standardize=True))
    mean, std = torch.linspace(0.05, 0.3, 10), torch.linspace(0.02, 0.1, 10)
    ae.set_band_stats(mean, std)
    torch.testing.assert_close(ae.frame_decoder.scale_out.mean, mean)
    assert "frame_encoder.scale_in.mean" in ae.state_dict()


def test_centre_skip_is_a_linear_path_to_and_from_the_centre_pixel() -> None:
    torch.manual_seed(3)
    cfg = dataclasses.replace(ModelConfig.small(), centre_skip=True)
    skip = ModalityAutoencoder(S2, cfg=cfg).eval()
    plain = ModalityAutoencoder(S2, cfg=ModelConfig.small()).eval()
    missing, unexpected = plain.load_state_dict(skip.state_dict(), strict=False)
    assert not missing
    assert sorted(unexpected) == [
        "frame_decoder.centre.bias", "frame_decoder.centre.weight",
        "frame_encoder.centre.bias", "frame_encoder.centre.weight",
    ]  # fmt: skip
    x, gaps = torch.rand(3, 11, 10, 15, 15), torch.full((3, 10), 5.0)
    with torch.no_grad():
        y_skip, _ = skip(x, gaps)
        y_plain, _ = plain(x, gaps)
        assert not torch.allclose(y_skip, y_plain)  # the path is live at initialisation
        for m in (skip.frame_encoder.centre, skip.frame_decoder.centre):
            assert m is not None
            m.weight.zero_()
            m.bias.zero_()
        torch.testing.assert_close(skip(x, gaps)[0], y_plain)  # and it is the only difference
        # the decoder's path writes the centre pixel of every frame, nothing else
        z = skip.encode(x, gaps)
        before = skip.decode(z, gaps)
        assert skip.frame_decoder.centre is not None
        skip.frame_decoder.centre.bias.fill_(0.5)
        changed = (skip.decode(z, gaps) - before).abs() > 1e-6  # [B, 11, C, 15, 15]
    assert changed[..., 7, 7].all()
    changed[..., 7, 7] = False
    assert not changed.any()


def test_shared_first_layer_projection_gives_encode_tokens() -> None:
    """Projecting frame tokens once (shared by windows) and adding the window's positions is exact."""
    from embedder.config import ModelConfig
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S2

    torch.manual_seed(0)
    ae = ModalityAutoencoder(S2, cfg=ModelConfig.small()).eval()
    assert ae.first_layer_shareable
    tokens = torch.randn(6, 11, ae.cfg.d_model)
    gaps = torch.tensor([[5.0] * 10, [3.0, 7.0, 1.0, 9.0, 5.0, 5.0, 2.0, 8.0, 4.0, 6.0]]).repeat(3, 1)
    pos = ae.positional(gaps)
    with torch.inference_mode():
        ref = ae.encode_tokens(tokens, gaps)
        got = ae.encode_tokens_shared(tokens, ae.project_first_layer(tokens), pos)
        one = ae.encode_tokens_shared(tokens[:1], ae.project_first_layer(tokens[:1]), pos[:1])  # broadcast
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(one, ref[:1], atol=1e-5, rtol=0)
    ae.train()
    with pytest.raises(RuntimeError, match="eval"):
        ae.encode_tokens_shared(tokens, ae.project_first_layer(tokens), pos)
