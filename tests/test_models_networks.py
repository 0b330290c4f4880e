"""Architectures: the HF GRU, the shared / unshared multi-task models, the ablations."""

from __future__ import annotations

import pytest
import torch

from fbgpu.models.losses import multitask_loss
from fbgpu.models.networks import MultiSourceGRU, build_nets, net_specs


def _gru_params(inp: int, hidden: int) -> int:
    return 3 * hidden * (inp + hidden) + 2 * 3 * hidden  # W_ih, W_hh, b_ih, b_hh


def _head_params(hidden: int) -> int:
    return 2 * hidden + hidden + 1  # BN weight/bias + Linear(hidden, 1)


def _inputs(net: MultiSourceGRU, B: int = 16) -> list[torch.Tensor]:
    lengths = {"hf": 40, "daily": 40, "weekly": 20, "monthly": 12}
    return [torch.randn(B, lengths[s], f) for s, f in zip(net.spec.sources,
                                                            net.spec.input_sizes, strict=True)]


def test_hf_model_is_gru_bn_fc_sigmoid() -> None:
    (net,) = build_nets("hf", 27)
    assert len(net.encoders) == 1 and len(net.heads) == 1
    gru = net.encoders[0]
    assert (gru.input_size, gru.hidden_size, gru.num_layers) == (27, 30, 1)
    n = sum(p.numel() for p in net.parameters())
    assert n == _gru_params(27, 30) + _head_params(30)
    out = net.predict(_inputs(net))
    assert out.shape == (16,) and bool(((out > 0) & (out < 1)).all())


def test_shared_lf_model_has_one_gru_reached_by_all_three_heads() -> None:
    (net,) = build_nets("lf", 27)
    assert len(net.encoders) == 1 and len(net.heads) == 3
    assert sum(p.numel() for p in net.parameters()) == _gru_params(6, 30) + 3 * _head_params(30)
    xs = _inputs(net)
    heads = net(xs)
    assert heads.shape == (3, 16)
    label = torch.randn(16)
    group = torch.zeros(16, dtype=torch.long)
    # The gradient of each head's IC alone reaches the shared GRU.
    for k in range(3):
        net.zero_grad()
        multitask_loss(heads[k : k + 1], label, group, 1, 0.0).backward(retain_graph=True)
        g = net.encoders[0].weight_hh_l0.grad
        assert g is not None and float(g.abs().sum()) > 0
        for j in range(3):  # ... and only its own head
            other = net.heads[j].fc.weight.grad
            assert (other is not None and float(other.abs().sum()) > 0) == (j == k)


def test_unshared_lf_model_has_three_grus() -> None:
    (net,) = build_nets("lf-unshared", 27)
    assert len(net.encoders) == 3
    assert sum(p.numel() for p in net.parameters()) == 3 * (_gru_params(6, 30) +
                                                             _head_params(30))
    heads = net(_inputs(net))
    net.zero_grad()
    heads[0].sum().backward()
    own = net.encoders[0].weight_ih_l0.grad
    assert own is not None and float(own.abs().sum()) > 0
    for k in (1, 2):  # head 1 does not see GRUs 2 and 3
        other = net.encoders[k].weight_ih_l0.grad
        assert other is None or float(other.abs().sum()) == 0


def test_ablations_and_fullband() -> None:
    assert [s.sources for s in net_specs("lf-separate", 27)] == [("daily",), ("weekly",),
                                                                 ("monthly",)]
    (daily,) = build_nets("lf-daily", 27)
    assert daily.spec.sources == ("daily",) and not daily.spec.sigmoid
    (fb,) = build_nets("fullband-mtl", 27)
    assert len(fb.encoders) == 2 and len(fb.heads) == 4
    assert fb.spec.share == (0, 0, 0, 1)
    assert fb.encoders[1].input_size == 27
    fb.eval()
    xs = _inputs(fb)
    assert torch.equal(fb.predict(xs), fb(xs).mean(0))
    with pytest.raises(ValueError, match="unknown model kind"):
        net_specs("nope", 27)


@pytest.mark.parametrize("kind", ["hf", "lf", "lf-unshared"])
def test_dropout_acts_in_training_only(kind: str) -> None:
    """``dropout`` p > 0: training-mode outputs vary between calls (units are dropped at random),
    eval-mode outputs are deterministic and equal those of the same weights without dropout;
    p = 0 builds the same network, RNG draws included, as the default."""
    torch.manual_seed(0)
    (plain,) = build_nets(kind, 27)
    torch.manual_seed(0)
    (zero,) = build_nets(kind, 27, dropout=0.0)
    torch.manual_seed(0)
    (drop,) = build_nets(kind, 27, dropout=0.5)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                 drop.state_dict().values(), strict=True))
    xs = _inputs(plain)
    torch.manual_seed(1)
    a = plain(xs)
    torch.manual_seed(1)
    b = zero(xs)
    assert torch.equal(a, b) and torch.equal(plain(xs), a)  # p = 0: deterministic in training
    torch.manual_seed(1)
    d1 = drop(xs)
    d2 = drop(xs)
    assert not torch.equal(d1, d2) and not torch.equal(d1, a)
    torch.manual_seed(1)
    assert torch.equal(drop(xs), d1)  # the randomness is torch's seeded RNG
    plain.load_state_dict(drop.state_dict())  # BatchNorm's running statistics included
    for net in (plain, drop):
        net.eval()
    with torch.no_grad():
        e = drop(xs)
        assert torch.equal(e, drop(xs)) and torch.equal(e, plain(xs))
    with pytest.raises(ValueError, match="dropout"):
        build_nets(kind, 27, dropout=1.0)
