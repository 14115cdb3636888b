"""Packed seeds (bench/models/packed.py): K members trained as one module equal K separate
runs with the same initialisation and data order.

In float64 the packed math is checked to 1e-10 (relative, per tensor) against independent
runs, BatchNorm running statistics included. In float32 the vmapped convolutions sum in another
order than a member's own, so the two agree to rounding per step but not bit for bit (as two
cuDNN algorithms do); that is checked after one SGD step, where rounding has not compounded."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bench.models import build_model
from bench.models.packed import PackedNetwork, packable
from bench.models.packed_grouped import GroupedPackedNetwork, grouped_obstacle
from bench.spec import DataSpec

SPEC2 = DataSpec("t", "multi-class", 2, 1, 3, (28, 28), ("a", "b", "c"))
SPEC3 = DataSpec("t", "multi-class", 3, 1, 3, (28, 28, 28), ("a", "b", "c"))
MODELS = {
    "bccnn": (SPEC2, {"dropout": 0.0}),
    "resnet18_28": (
        SPEC2,
        {"name": "resnet18", "small_input_stem": True, "init": "torch", "pretrained": False},
    ),
    "cnn3d": (SPEC3, {"dropout": 0.0}),
}


def _member(key: str, seed: int, dtype: torch.dtype) -> nn.Module:
    spec, options = MODELS[key]
    options = dict(options)
    name = options.pop("name", key)
    torch.manual_seed(seed)  # the seed's own initialisation, as a separate run draws it
    return build_model(name, spec, **options).to(dtype)


def _train_both(
    key: str,
    dtype: torch.dtype,
    steps: int,
    k: int = 2,
    batch: int = 4,
    optim=torch.optim.Adam,
    packer=PackedNetwork,
):
    members = [_member(key, seed, dtype) for seed in range(k)]
    separate = [copy.deepcopy(m).train() for m in members]
    packed = packer(members).train()
    opt = optim(packed.parameters(), lr=1e-3, weight_decay=1e-4)
    own = [optim(m.parameters(), lr=1e-3, weight_decay=1e-4) for m in separate]
    spec = MODELS[key][0]
    for step in range(steps):
        # each member's own data order: its own generator
        gens = [torch.Generator().manual_seed(1000 * seed + step) for seed in range(k)]
        xs = [torch.randn(batch, 1, *spec.input_size, generator=g, dtype=dtype) for g in gens]
        ys = [torch.randint(0, 3, (batch,), generator=g) for g in gens]
        out = packed(torch.stack(xs))
        loss = sum(nn.functional.cross_entropy(out[i], ys[i]) for i in range(k))
        opt.zero_grad()
        loss.backward()
        opt.step()
        for i, net in enumerate(separate):
            own[i].zero_grad()
            nn.functional.cross_entropy(net(xs[i]), ys[i]).backward()
            own[i].step()
    return packed, separate


def _worst(packed: PackedNetwork, separate: list[nn.Module]) -> tuple[float, str]:
    worst, where = 0.0, ""
    for i, net in enumerate(separate):
        state = packed.member_state_dict(i)
        for name, value in net.state_dict().items():
            if not value.dtype.is_floating_point:
                assert torch.equal(state[name], value), name  # num_batches_tracked
                continue
            rel = float((state[name] - value).norm() / value.norm().clamp_min(1e-30))
            if rel > worst:
                worst, where = rel, f"member {i} {name}"
    return worst, where


@pytest.mark.parametrize("key", list(MODELS))
def test_packed_members_equal_separate_runs(key):
    packed, separate = _train_both(key, torch.float64, steps=4)
    worst, where = _worst(packed, separate)
    assert worst < 1e-10, f"{key}: {where} differs by {worst:.2e}"
    # BatchNorm statistics are per member and moved (they are compared above too)
    stats = [n for n in separate[0].state_dict() if n.endswith("running_mean")]
    if key != "bccnn":
        assert stats
        a, b = (packed.member_state_dict(i)[stats[0]] for i in range(2))
        assert not torch.allclose(a, b)  # two members, two sets of statistics
        assert not torch.allclose(a, torch.zeros_like(a))


@pytest.mark.parametrize("key", list(MODELS))
def test_grouped_convolution_members_equal_separate_runs(key):
    """The second implementation (one K-times-wider network of grouped convolutions) is exact
    too: float64, 4 Adam steps, every weight and BatchNorm statistic of every member."""
    packed, separate = _train_both(key, torch.float64, steps=4, packer=GroupedPackedNetwork)
    worst, where = _worst(packed, separate)
    assert worst < 1e-10, f"{key}: {where} differs by {worst:.2e}"
    x = torch.randn(3, 1, *MODELS[key][0].input_size, dtype=torch.float64)
    packed.eval()
    shared = packed(x, shared=True)
    for i, net in enumerate(separate):
        torch.testing.assert_close(shared[i], net.eval()(x), rtol=1e-10, atol=1e-12)


def test_a_module_without_a_grouped_form_is_named():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4))
    assert grouped_obstacle(net) == "1: GroupNorm has no grouped packed form"
    with pytest.raises(ValueError, match="GroupNorm"):
        GroupedPackedNetwork([net, copy.deepcopy(net)])


@pytest.mark.parametrize("key", ["bccnn", "resnet18_28"])
def test_packed_float32_agrees_to_rounding_after_one_step(key):
    # SGD: Adam's first step is lr * sign(grad), which turns rounding of a near-zero gradient
    # into a full step either way, packed or not
    packed, separate = _train_both(key, torch.float32, steps=1, optim=torch.optim.SGD)
    for i, net in enumerate(separate):
        # over the whole network: a bias whose gradient cancels to ~0 (a BatchNorm's shift
        # ahead of another BatchNorm) has no relative precision of its own in float32
        ours = torch.cat(
            [v.flatten() for v in packed.member_state_dict(i).values() if v.dtype.is_floating_point]
        )
        theirs = torch.cat(
            [v.flatten() for v in net.state_dict().values() if v.dtype.is_floating_point]
        )
        assert float((ours - theirs).norm() / theirs.norm()) < 1e-5, f"{key} member {i}"


def test_members_are_independent_and_dropout_differs_per_member():
    members = [_member("bccnn", s, torch.float32) for s in (0, 0)]  # identical twins
    for m in members:
        for mod in m.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = 0.5
    packed = PackedNetwork(members).train()
    x = torch.randn(4, 1, 28, 28)
    out = packed(torch.stack([x, x]))
    assert not torch.allclose(out[0], out[1])  # own dropout masks
    packed.eval()
    out = packed(x, shared=True)
    assert torch.allclose(out[0], out[1])  # same weights, no dropout: same outputs
    # a gradient of member 0's loss touches member 0 only
    packed.train()
    packed(torch.stack([x, x]))[0].sum().backward()
    params, _ = packed.stacked()
    grad = next(iter(params.values())).grad
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() == 0


def test_a_member_round_trips_and_mismatched_members_are_refused():
    members = [_member("bccnn", s, torch.float32) for s in (0, 1)]
    packed = PackedNetwork(members)
    net = packed.member(1, members[0])
    for name, value in members[1].state_dict().items():
        assert torch.equal(net.state_dict()[name], value)
    packed.load_member(0, members[1].state_dict())
    assert torch.equal(
        packed.member_state_dict(0)["features.0.weight"], members[1].features[0].weight
    )
    with pytest.raises(ValueError, match="one architecture"):
        PackedNetwork([members[0], _member("cnn3d", 0, torch.float32)])
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, momentum=None))
    assert "momentum=None" in packable(bn)
    assert packable(members[0]) is None


def test_bench_speed_packed_writes_the_table(tmp_path):
    import pandas as pd

    from bench.commands.speed import main

    rc = main(
        [
            "packed",
            "1",
            "2",
            "--packed-models",
            "bccnn",
            "--batch",
            "8",
            "--steps",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    table = pd.read_csv(tmp_path / "packed.csv")
    # one row per K and implementation, both timed against the same separate cell
    assert list(table["k"]) == [1, 1, 2, 2] and (table["samples_per_sec_packed"] > 0).all()
    assert list(table["implementation"]) == ["torch.func vmap", "grouped conv"] * 2
    ratio = table["samples_per_sec_packed"] / table["samples_per_sec_separate"]
    assert ratio.round(3).tolist() == table["speedup_vs_separate"].tolist()
    md = (tmp_path / "packed.md").read_text()
    assert "| bccnn | torch.func vmap | 8 | 2 |" in md and "| bccnn | grouped conv | 8 | 2 |" in md
