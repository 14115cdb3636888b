"""K networks of one architecture trained as one module: ``torch.func`` model ensembling.

The members' parameters and buffers are stacked along a new leading dimension
(``torch.func.stack_module_state``) and one forward serves all of them through ``vmap`` over
``functional_call``: member ``k`` sees only ``x[k]`` and its own weights, BatchNorm statistics
and (``randomness="different"``) its own dropout masks. Members never touch each other, so with
a per-member loss summed over members each member's gradient is exactly its own; elementwise
optimisers (SGD, Adam, AdamW) over the stacked tensors then update each member exactly as K
separate optimisers would. Dropout masks are drawn per member from the packed RNG stream: equal
in distribution to a separate run's masks, not the same bits.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class PackedNetwork(nn.Module):
    """``members`` (same architecture) as one module; ``forward(x)`` takes ``(K, B, ...)``
    and returns ``(K, B, ...)``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("PackedNetwork needs at least one member")
        names = [tuple(m.state_dict()) for m in members]
        if any(n != names[0] for n in names):
            raise ValueError("packed members must share one architecture (same state-dict keys)")
        self.k = len(members)
        params, buffers = stack_module_state(members)
        # dots are not allowed in module attribute names: keep a name map
        self._pnames = {n: f"p{i}" for i, n in enumerate(params)}
        self._bnames = {n: f"b{i}" for i, n in enumerate(buffers)}
        for n, v in params.items():
            self.register_parameter(self._pnames[n], nn.Parameter(v.detach().clone()))
        for n, v in buffers.items():
            self.register_buffer(self._bnames[n], v.detach().clone())
        base = copy.deepcopy(members[0]).to("meta")
        self.__dict__["_base"] = base  # a stateless template, outside the module tree

    def stacked(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        params = {n: getattr(self, a) for n, a in self._pnames.items()}
        buffers = {n: getattr(self, a) for n, a in self._bnames.items()}
        return params, buffers

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """``x``: ``(K, B, ...)``, member ``k`` sees ``x[k]``; ``shared``: ``(B, ...)`` for
        all members (evaluation on one split)."""
        params, buffers = self.stacked()
        base = self.__dict__["_base"]
        base.train(self.training)

        def one(p, b, xi):
            return functional_call(base, (p, b), (xi,))

        in_x = None if shared else 0
        return vmap(one, in_dims=(0, 0, in_x), randomness="different")(params, buffers, x)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s weights and buffers, with the keys of the original network."""
        params, buffers = self.stacked()
        state = {n: v[k].detach().clone() for n, v in {**params, **buffers}.items()}
        order = list(self.__dict__["_base"].state_dict())
        return {n: state[n] for n in order if n in state}

    def member(self, k: int, template: nn.Module) -> nn.Module:
        """A copy of ``template`` holding member ``k``'s weights."""
        net = copy.deepcopy(template)
        net.load_state_dict(self.member_state_dict(k))
        return net

    def load_member(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Put a network's state dict into member ``k`` (resuming one member)."""
        with torch.no_grad():
            for n, a in {**self._pnames, **self._bnames}.items():
                getattr(self, a)[k].copy_(state[n])


def packable(model: nn.Module) -> str | None:
    """None when ``model`` can be packed, else why not (one line)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None:
            return f"{type(m).__name__} with momentum=None (cumulative average) is not packable"
    if any(p.is_sparse for p in model.parameters()):
        return "sparse parameters are not packable"
    return None
