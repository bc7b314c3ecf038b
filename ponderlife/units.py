"""Which hidden units a plasticity method manages, and where each unit's weights live.

A :class:`UnitLayer` describes one layer of units: the module whose forward output holds
their activations, the slices of parameters that *produce* them (incoming weights and
biases, redrawn on replacement), the slices that *consume* them (outgoing weights, zeroed
on replacement and summed into the contribution utility), the consumers' biases (for
the bias transfer) and any norm layer with per-unit statistics.

A unit may feed several consumers (a recurrent cell's state feeds the recurrence, the
output head and the halting head) and its incoming weights may be several rows (a GRU
unit's row in each of the three gates): :class:`ParamSlice` covers both.

:func:`find_unit_layers` discovers layers in ``nn.Sequential`` chains
(Linear/Conv2d → [norm] → activation → [dropout/pool/flatten] → Linear/Conv2d, including a
conv feeding a Linear through ``Flatten``) and in any module that describes its own units
with a ``unit_layers()`` method (the built-in step functions do). Other architectures pass
their layers explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ponderlife.optim import reset_optimizer_state

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.SiLU, nn.SELU)
PRODUCERS = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
PASS_THROUGH = (nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Identity)


_CHUNK_ELEMENTS = 1 << 19  # 2 MiB of float32: the |w| temporary stays in cache


def abs_sum_along(tensor: Tensor, dim: int) -> Tensor:
    """Σ|x| over every dimension but ``dim``, shape (tensor.shape[dim],).

    Continual backprop needs this for every managed layer at every step, so it is done in
    cache-sized chunks of contiguous memory: one read of the weights, where
    ``linalg.vector_norm(ord=1)`` over a strided dimension or ``abs().sum()`` over the
    whole matrix read and write it several times (≈6× and ≈2× slower for 2000×2000).
    """
    size = tensor.shape[dim]
    view = tensor.reshape(math.prod(tensor.shape[:dim]), size, -1)  # (before, size, after)
    if tensor.numel() <= _CHUNK_ELEMENTS:
        return view.abs().sum(dim=(0, 2))
    if view.shape[0] == 1:
        rows = max(1, _CHUNK_ELEMENTS // max(1, view.shape[2]))
        return torch.cat([chunk.abs().sum(dim=(0, 2)) for chunk in view.split(rows, dim=1)])
    total = view.new_zeros(size)
    rows = max(1, _CHUNK_ELEMENTS // (size * view.shape[2]))
    for chunk in view.split(rows, dim=0):
        total.add_(chunk.abs().sum(dim=(0, 2)))
    return total


@dataclass(frozen=True, eq=False)
class ParamSlice:
    """The part of ``param`` that belongs to units: along ``dim``, unit i owns indices
    ``(i·block + j) + g·stride`` for ``j < block`` and ``g < groups``.

    ``block`` > 1: a conv channel flattened into H·W consecutive Linear columns.
    ``groups`` > 1: stacked gates (GRU: 3 blocks of ``stride`` = hidden-size rows).
    ``init_bound``: incoming weights are redrawn from U(−bound, bound) (PyTorch's default
    initialisation of the layer); ``fan_in`` serves the ``"kaiming"`` scheme.
    """

    param: nn.Parameter
    dim: int
    block: int = 1
    groups: int = 1
    stride: int = 0
    init_bound: float = 0.0
    fan_in: int = 1

    def indices(self, units: Tensor) -> Tensor:
        offsets = torch.arange(self.block, device=units.device)
        base = (units[:, None] * self.block + offsets).flatten()
        if self.groups == 1:
            return base
        shifts = torch.arange(self.groups, device=units.device) * self.stride
        return (shifts[:, None] + base).flatten()

    def abs_sum_per_unit(self, units: int) -> Tensor:
        """Σ|w| over each unit's part of ``param``, shape (units,)."""
        per_index = abs_sum_along(self.param.detach(), self.dim)
        return per_index.reshape(self.groups, units, self.block).sum(dim=(0, 2))

    def folded(self, tensor: Tensor, units: Tensor) -> Tensor:
        """``tensor``'s slices for ``units`` (outgoing, groups = 1) summed over each unit's
        block and over every dim beyond the first two: (out, len(units))."""
        selected = tensor.index_select(self.dim, self.indices(units)).movedim(self.dim, 1)
        selected = selected.reshape(selected.shape[0], selected.shape[1], -1).sum(-1)
        return selected.reshape(selected.shape[0], len(units), self.block).sum(-1)


@dataclass(eq=False)
class UnitLayer:
    name: str
    size: int
    activation: nn.Module  # forward output holds the units: (B, size) or (B, size, H, W)
    incoming: list[ParamSlice]  # weights producing the units: redrawn
    incoming_bias: list[ParamSlice] = field(default_factory=list)  # zeroed
    outgoing: list[ParamSlice] = field(default_factory=list)  # consumers' weights: zeroed
    consumer_bias: list[nn.Parameter | None] = field(default_factory=list)  # per outgoing
    norms: list[nn.Module] = field(default_factory=list)


def _rows(param: nn.Parameter, fan_in: int, bound: float, groups: int = 1) -> ParamSlice:
    stride = param.shape[0] // groups
    return ParamSlice(param, 0, groups=groups, stride=stride, init_bound=bound, fan_in=fan_in)


def _bias(param: nn.Parameter | None, groups: int = 1) -> list[ParamSlice]:
    if param is None:
        return []
    return [ParamSlice(param, 0, groups=groups, stride=param.shape[0] // groups)]


def _fan_in(module: nn.Module) -> int:
    weight = module.weight
    return int(weight.shape[1] * math.prod(weight.shape[2:]))


def producer_slices(module: nn.Module) -> tuple[list[ParamSlice], list[ParamSlice]]:
    """Incoming (weight rows, bias entries) of a Linear or Conv2d's output units."""
    fan_in = _fan_in(module)
    return [_rows(module.weight, fan_in, 1 / math.sqrt(fan_in))], _bias(module.bias)


def consumer_slice(module: nn.Module, units: int) -> ParamSlice:
    """The outgoing columns that a Linear or Conv2d consumer reads from ``units`` units."""
    inputs = module.weight.shape[1]
    if inputs % units:
        raise ValueError(
            f"{type(module).__name__} reads {inputs} inputs, not a multiple of {units} units"
        )
    return ParamSlice(module.weight, 1, block=inputs // units)


def cell_unit_layer(
    name: str, cell: nn.RNNCellBase, heads: list[nn.Linear], gates: int
) -> UnitLayer:
    """Units of a recurrent cell: its rows in every gate in, recurrence and heads out."""
    hidden = cell.hidden_size
    bound = 1 / math.sqrt(hidden)  # PyTorch's initialisation of RNN/GRU cells
    incoming = [
        _rows(cell.weight_ih, cell.input_size, bound, gates),
        _rows(cell.weight_hh, hidden, bound, gates),
    ]
    biases = _bias(cell.bias_ih, gates) + _bias(cell.bias_hh, gates)
    outgoing = [ParamSlice(cell.weight_hh, 1)] + [consumer_slice(h, hidden) for h in heads]
    return UnitLayer(
        name=name,
        size=hidden,
        activation=cell,
        incoming=incoming,
        incoming_bias=biases,
        outgoing=outgoing,
        consumer_bias=[cell.bias_hh] + [h.bias for h in heads],
    )


def _sequential_layers(prefix: str, sequential: nn.Sequential) -> list[UnitLayer]:
    children = list(sequential.named_children())
    layers = []
    for position, (name, producer) in enumerate(children):
        if not isinstance(producer, PRODUCERS):
            continue
        norms, activation, consumer = [], None, None
        for _, module in children[position + 1 :]:
            if activation is None and isinstance(module, NORMS):
                norms.append(module)
            elif activation is None and isinstance(module, ACTIVATIONS):
                activation = module
            elif activation is not None and isinstance(module, PASS_THROUGH):
                continue
            elif activation is not None and isinstance(module, PRODUCERS):
                consumer = module
                break
            else:
                break
        if activation is None or consumer is None:
            continue
        units = producer.weight.shape[0]
        incoming, biases = producer_slices(producer)
        layers.append(
            UnitLayer(
                name=f"{prefix}{name}",
                size=units,
                activation=activation,
                incoming=incoming,
                incoming_bias=biases,
                outgoing=[consumer_slice(consumer, units)],
                consumer_bias=[consumer.bias],
                norms=norms,
            )
        )
    return layers


def find_unit_layers(model: nn.Module) -> list[UnitLayer]:
    """Discover the unit layers of ``model`` (see the module docstring).

    Raises ``ValueError`` when nothing is found, rather than managing nothing silently.
    """
    layers: list[UnitLayer] = []
    claimed: set[int] = set()
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if hasattr(module, "unit_layers") and id(module) not in claimed:
            layers.extend(module.unit_layers(prefix))
            claimed.update(id(m) for m in module.modules())
        elif isinstance(module, nn.Sequential) and id(module) not in claimed:
            layers.extend(_sequential_layers(prefix, module))
    if not layers:
        raise ValueError(
            f"found no hidden units to manage in {type(model).__name__}: expected "
            "Linear/Conv2d → activation → Linear/Conv2d chains in nn.Sequential, or modules "
            "with a unit_layers() method; pass units=[UnitLayer(...)] explicitly"
        )
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"unit layer names must be unique, got {names}")
    return layers


class ActivationRecorder:
    """Forward hooks on each layer's activation module that only *record* its output (by
    default only in training mode; ``training_only=False`` records every forward, e.g. for
    a diagnostic probe); whoever owns the recorder takes the records with :meth:`pop`."""

    def __init__(self, layers: Sequence[UnitLayer], *, training_only: bool = True):
        self.training_only = training_only
        self._records: dict[str, list[Tensor]] = {layer.name: [] for layer in layers}
        self._hooks = [
            layer.activation.register_forward_hook(self._recorder(layer.name, layer.activation))
            for layer in layers
        ]

    def _recorder(self, name: str, owner: nn.Module):
        # A deep copy of the model (LwF's teacher, say) copies this hook too; the identity
        # check keeps the copy's forwards out of the records.
        def record(module: nn.Module, inputs, output: Tensor) -> None:
            if (module.training or not self.training_only) and module is owner:
                self._records[name].append(output.detach())

        return record

    def clear(self) -> None:
        """Drop every record (e.g. before a training forward, to discard stray ones)."""
        for name in self._records:
            self._records[name] = []

    def pop(self, name: str) -> list[Tensor]:
        """The activations recorded for layer ``name`` since the last pop (oldest first)."""
        records, self._records[name] = self._records[name], []
        return records

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


@torch.no_grad()
def reinitialise_units(
    layer: UnitLayer,
    units: Tensor,
    optimizer: torch.optim.Optimizer | None,
    *,
    init: str = "default",
    generator: torch.Generator | None = None,
    mean: Tensor | None = None,
) -> None:
    """Give ``units`` of ``layer`` fresh incoming weights and silence them.

    If ``mean`` (their mean activations, one per unit) is given, each consumer's bias first
    absorbs ``W_next[:, i]·mean_i`` so the consumers' output on the mean activation is kept.
    Then incoming weights are redrawn (``init``: ``"default"`` = U(±init_bound), the layer's
    PyTorch initialisation; ``"kaiming"`` = N(0, 2/fan_in)), incoming biases and outgoing
    weights are zeroed (after the redraw, so a recurrent unit's self-weight ends at 0),
    norm statistics are reset, and the optimizer state of every touched slice is cleared.
    """
    if mean is not None:
        for outgoing, bias in zip(layer.outgoing, layer.consumer_bias, strict=True):
            if bias is not None:
                bias.add_(outgoing.folded(outgoing.param, units) @ mean.to(bias.dtype))
    for part in layer.incoming:
        index = part.indices(units)
        shape = list(part.param.shape)
        shape[part.dim] = index.numel()
        if init == "default":
            fresh = torch.rand(shape, generator=generator, dtype=part.param.dtype)
            fresh = (fresh * 2 - 1) * part.init_bound
        else:
            fresh = torch.randn(shape, generator=generator, dtype=part.param.dtype)
            fresh = fresh * math.sqrt(2.0 / part.fan_in)
        part.param.index_copy_(part.dim, index, fresh.to(part.param.device))
        if optimizer is not None:
            reset_optimizer_state(optimizer, part.param, index, part.dim)
    for part in [*layer.incoming_bias, *layer.outgoing]:
        index = part.indices(units)
        part.param.index_fill_(part.dim, index, 0.0)
        if optimizer is not None:
            reset_optimizer_state(optimizer, part.param, index, part.dim)
    for norm in layer.norms:
        if getattr(norm, "weight", None) is not None:
            norm.weight[units] = 1.0
        if getattr(norm, "bias", None) is not None:
            norm.bias[units] = 0.0
        if getattr(norm, "running_mean", None) is not None:
            norm.running_mean[units] = 0.0
            norm.running_var[units] = 1.0
