"""K networks of one architecture as one wider network: grouped convolutions (Packed-Ensembles).

The second way to pack seeds (Laurent et al., ICLR 2023, with alpha=1, gamma=1: members as
independent groups). A copy of the architecture is widened K times: every convolution gets K
times its channels and K times its groups (member ``k`` owns channel block ``k``), every
BatchNorm K times its channels, every Linear becomes a batched matmul over K weight matrices.
Channel-wise layers (activations, pooling, dropout, flatten) are left as they are. The batch
travels as ``(B, K*C, ...)``, so flattening keeps each member's features contiguous and in its
own order. Equal to :class:`~bench.models.packed.PackedNetwork` in what it computes; which one
is faster depends on the device's grouped-convolution kernels (``bench-speed packed``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# modules that act per channel or per element: the same with K members side by side
_CHANNELWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
    nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.MaxPool1d, nn.MaxPool2d,
    nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Flatten, nn.Sequential, nn.ModuleList, nn.ModuleDict,
)  # fmt: skip


class PackedLinear(nn.Module):
    """K linear layers applied to ``(B, K*in)``: member ``k`` reads block ``k``."""

    def __init__(self, weights: torch.Tensor, biases: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weights)  # (K, out, in)
        self.bias = nn.Parameter(biases) if biases is not None else None  # (K, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, out, inp = self.weight.shape
        y = torch.einsum("bki,koi->bko", x.reshape(x.shape[0], k, inp), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(x.shape[0], k * out)


def grouped_obstacle(model: nn.Module) -> str | None:
    """None when every module of ``model`` has a grouped packed form, else why not."""
    for name, m in model.named_modules():
        if name == "":
            continue
        # exact types: a subclass (timm's BatchNormAct2d) may do more than its base
        if type(m) in (*_CONVS, *_NORMS, nn.Linear, *_CHANNELWISE):
            if isinstance(m, _CONVS) and m.padding_mode != "zeros":
                return f"{name}: padding_mode={m.padding_mode!r} is not packable by groups"
            if isinstance(m, _NORMS) and m.momentum is None:
                return f"{name}: BatchNorm with momentum=None is not packable"
            continue
        if any(True for _ in m.children()):  # a container: its children decide
            if any(True for _ in m.parameters(recurse=False)):
                return f"{name}: {type(m).__name__} holds its own parameters"
            continue
        if any(True for _ in m.parameters(recurse=False)) or list(m.buffers(recurse=False)):
            return f"{name}: {type(m).__name__} has no grouped packed form"
    return None


def _wide_conv(convs: list[nn.Conv2d]) -> nn.Module:
    c = convs[0]
    k = len(convs)
    wide = type(c)(
        c.in_channels * k,
        c.out_channels * k,
        c.kernel_size,
        stride=c.stride,
        padding=c.padding,
        dilation=c.dilation,
        groups=c.groups * k,
        bias=c.bias is not None,
    )
    with torch.no_grad():
        wide.weight.copy_(torch.cat([m.weight for m in convs]))
        if c.bias is not None:
            wide.bias.copy_(torch.cat([m.bias for m in convs]))
    return wide.to(c.weight.dtype)


def _wide_norm(norms: list[nn.BatchNorm2d]) -> nn.Module:
    n = norms[0]
    wide = type(n)(
        n.num_features * len(norms),
        eps=n.eps,
        momentum=n.momentum,
        affine=n.affine,
        track_running_stats=n.track_running_stats,
    )
    with torch.no_grad():
        if n.affine:
            wide.weight.copy_(torch.cat([m.weight for m in norms]))
            wide.bias.copy_(torch.cat([m.bias for m in norms]))
        if n.track_running_stats:
            wide.running_mean.copy_(torch.cat([m.running_mean for m in norms]))
            wide.running_var.copy_(torch.cat([m.running_var for m in norms]))
            wide.num_batches_tracked.copy_(n.num_batches_tracked)
    ref = n.weight if n.affine else n.running_mean
    return wide.to(ref.dtype) if ref is not None else wide


def _widen(template: nn.Module, members: list[nn.Module]) -> None:
    for name, child in list(template.named_children()):
        parts = [getattr(m, name) for m in members]
        if type(child) in _CONVS:
            setattr(template, name, _wide_conv(parts))
        elif type(child) in _NORMS:
            setattr(template, name, _wide_norm(parts))
        elif type(child) is nn.Linear:
            w = torch.stack([p.weight.detach() for p in parts]).clone()
            b = (
                torch.stack([p.bias.detach() for p in parts]).clone()
                if child.bias is not None
                else None
            )
            setattr(template, name, PackedLinear(w, b))
        else:
            _widen(child, parts)


class GroupedPackedNetwork(nn.Module):
    """``members`` (same architecture) as one K-times-wider network; ``forward(x)`` takes
    ``(K, B, ...)`` (or ``(B, ...)`` with ``shared=True``) and returns ``(K, B, ...)``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        reason = grouped_obstacle(members[0])
        if reason:
            raise ValueError(reason)
        self.k = len(members)
        self.__dict__["_template"] = copy.deepcopy(members[0])  # unwidened, for member()
        self.net = copy.deepcopy(members[0])
        _widen(self.net, members)

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        if shared:
            x = x.unsqueeze(0).expand(self.k, *x.shape)
        k, b = x.shape[:2]
        wide = x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])
        out = self.net(wide)
        return out.reshape(b, k, -1, *out.shape[2:]).transpose(0, 1).reshape(k, b, *self._tail(out))

    def _tail(self, out: torch.Tensor) -> tuple[int, ...]:
        return (out.shape[1] // self.k, *out.shape[2:])

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s weights and buffers, with the keys of the original network."""
        out = {}
        modules = dict(self.net.named_modules())
        for key, value in self.net.state_dict().items():
            owner, _, leaf = key.rpartition(".")
            m = modules[owner]
            if isinstance(m, PackedLinear):
                out[key] = value[k].clone()
            elif leaf == "num_batches_tracked":
                out[key] = value.clone()
            elif isinstance(m, (*_CONVS, *_NORMS)):
                out[key] = value.chunk(self.k)[k].clone()
            else:
                out[key] = value.clone()
        return out

    def member(self, k: int) -> nn.Module:
        net = copy.deepcopy(self.__dict__["_template"])
        net.load_state_dict(self.member_state_dict(k))
        return net
