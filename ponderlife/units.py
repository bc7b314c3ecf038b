"""Which hidden units a plasticity method manages, and where each unit's weights live.

A :class:`UnitLayer` describes one layer of units: the module whose forward output holds
their activations, the slices of parameters that *produce* them (incoming weights and
biases, redrawn on replacement), the slices that *consume* them (outgoing weights, zeroed
on replacement and summed into the contribution utility), the consumers' biases (for
the bias transfer) and any norm layer with per-unit statistics.

A unit may feed several consumers (a recurrent cell's state feeds the recurrence, the
output head and the halting head) and its incoming weights may be several rows (a GRU
unit's row in each of the three gates): :class:`ParamSlice` covers both.

:func:`find_unit_layers` discovers layers two ways. Given an example input it traces one
forward (:func:`trace_unit_layers`): Linear/Conv2d → [norm] → activation module →
Linear/Conv2d chains in the order modules actually run, across submodule boundaries and
through views, sample selection, dropout and pooling (Avalanche's ``SimpleMLP``,
``SimpleCNN``, multi-head and incremental classifiers). Without one it reads
``nn.Sequential`` chains (including a conv feeding a Linear through ``Flatten``). Either way
a module that describes its own units with a ``unit_layers()`` method (the built-in step
functions do) is taken at its word, and hidden units that cannot be managed (a reader that
is not a Linear/Conv2d, a functional activation, a residual ``+``) are an error naming the
layer and the ``units=[unit_layer(...)]`` call to write, never silently left out.

**Where the units are in an activation.** A Linear's or a recurrent cell's units are the
last axis of its activation, every leading axis is a sample or a position: (B, units), or
(B, L, units) for a Linear applied to a sequence. A Conv2d's units are its channels, axis 1
of (B, C, H, W). :func:`unit_view` turns either into (B, units, positions) so that every
per-unit statistic is an average over samples *and* positions, never a value per position.

**One activation module, one place.** Activations are recorded by a forward hook on the
layer's activation module, so a module object used at two places (``act = nn.ReLU()``
after two layers) would record both layers' activations as one layer's. Such models are
refused at construction (:func:`check_unit_layers`) with the places named.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ponderlife.optim import reset_optimizer_state

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.SiLU, nn.SELU)
PRODUCERS = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
PASS_THROUGH = (
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Identity,
)


#: How much each sample of each step-function forward counts: an (R, B) tensor, or one
#: weight vector per forward when forwards ran on different rows (a per-sample unroll).
StepWeights = Tensor | Sequence[Tensor]

_CHUNK_ELEMENTS = 1 << 19  # 2 MiB of float32: the |w| temporary stays in cache


def abs_sum_along(tensor: Tensor, dim: int) -> Tensor:
    """Σ|x| over every dimension but ``dim``, shape (tensor.shape[dim],).

    Continual backprop needs this for every managed layer at every step, so it is done in
    cache-sized chunks of contiguous memory: one read of the weights, where
    ``linalg.vector_norm(ord=1)`` over a strided dimension or ``abs().sum()`` over the
    whole matrix read and write it several times (≈6× and ≈2× slower for 2000×2000).
    """
    if tensor.dim() == 1:
        return tensor.abs()
    if tensor.numel() <= _CHUNK_ELEMENTS:  # one operation: small layers pay per operation
        others = tuple(d for d in range(tensor.dim()) if d != dim)
        return torch.linalg.vector_norm(tensor, 1, dim=others)
    size = tensor.shape[dim]
    view = tensor.reshape(math.prod(tensor.shape[:dim]), size, -1)  # (before, size, after)
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

    Every index along ``dim`` belongs to some unit: ``param.shape[dim]`` is
    ``groups · units · block``. So ``ParamSlice(consumer.weight, 1)`` is "column i for unit
    i" of a Linear that reads exactly the units; a Linear that reads the units concatenated
    with other inputs cannot be described (split it into one Linear per input).
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
        per_block = self.abs_sum_per_block(units)
        return per_block[:, 0] if self.block == 1 else per_block.sum(dim=1)

    def abs_sum_per_block(self, units: int) -> Tensor:
        """Σ|w| over each unit's part of ``param`` for each of its ``block`` indices (a
        conv channel's flattened positions), shape (units, block)."""
        per_index = abs_sum_along(self.param.detach(), self.dim)
        if self.groups == 1:  # summing one group is a copy: skip it (a small layer's step
            return per_index.reshape(units, self.block)  # pays per operation, not per weight)
        return per_index.reshape(self.groups, units, self.block).sum(dim=0)

    def folded(self, tensor: Tensor, units: Tensor) -> Tensor:
        """``tensor``'s slices for ``units`` (outgoing, groups = 1) summed over each unit's
        block and over every dim beyond the first two: (out, len(units))."""
        selected = tensor.index_select(self.dim, self.indices(units)).movedim(self.dim, 1)
        selected = selected.reshape(selected.shape[0], selected.shape[1], -1).sum(-1)
        return selected.reshape(selected.shape[0], len(units), self.block).sum(-1)


@dataclass(eq=False)
class UnitLayer:
    """One layer of units and every parameter slice that belongs to them (see the module
    docstring): what a plasticity method scores, redraws and zeroes.

    ``activation``'s forward output is recorded (a forward hook) and holds the units on
    ``unit_axis``. On replacement the ``incoming`` slices are redrawn, the
    ``incoming_bias`` and ``outgoing`` slices zeroed (in that order, so a unit that reads
    itself ends with a zero self-weight) and ``norms`` reset; ``consumer_bias[k]`` (None:
    none) is the bias of the k-th ``outgoing`` consumer, which absorbs a removed unit's
    mean contribution. :func:`unit_layer` builds one for a Linear/Conv2d producer;
    ``docs/own_units.md`` writes one by hand for a step function discovery refuses.
    """

    name: str
    size: int
    activation: nn.Module  # forward output holds the units, on axis ``unit_axis``
    incoming: list[ParamSlice]  # weights producing the units: redrawn
    incoming_bias: list[ParamSlice] = field(default_factory=list)  # zeroed
    outgoing: list[ParamSlice] = field(default_factory=list)  # consumers' weights: zeroed
    consumer_bias: list[nn.Parameter | None] = field(default_factory=list)  # per outgoing
    norms: list[nn.Module] = field(default_factory=list)
    unit_axis: int = -1  # -1: (..., units) (Linear, cells); 1: (B, units, H, W) (Conv2d)


def unit_view(activation: Tensor, layer: UnitLayer) -> Tensor:
    """``activation`` of ``layer`` as (B, units, positions): positions are the conv
    layer's H·W (in ``Flatten`` order) or the sequence axes of a Linear (1 for a plain
    (B, units) activation)."""
    axis = layer.unit_axis
    if activation.dim() < 2 or activation.shape[axis] != layer.size:
        raise ValueError(
            f"unit layer {layer.name!r} has {layer.size} units on axis {axis} of its "
            f"activation, but {type(layer.activation).__name__} produced shape "
            f"{tuple(activation.shape)}; is that module applied to another layer's output too?"
        )
    moved = activation.movedim(axis, 1) if axis not in (1, 1 - activation.dim()) else activation
    return moved.reshape(moved.shape[0], layer.size, -1)


def recorded_samples(
    layer: UnitLayer, records: Sequence[Tensor], step_weights: StepWeights | None
) -> tuple[Tensor, Tensor | None]:
    """Every sample recorded for ``layer`` in one update, as (S, units, positions), and each
    sample's weight (S,), summing to 1 (None: all samples weigh the same).

    Without ``step_weights`` the records are concatenated along the batch, whatever their
    batch sizes (several forwards per update). ``step_weights`` weighs the R forwards of a
    pondering model's step function per sample (its reach probabilities): an (R, B)
    tensor when every forward ran on the whole batch, or R tensors, one weight per row of
    each forward (a per-sample unroll, whose forwards shrink as samples stop).
    """
    views = [unit_view(record, layer) for record in records]
    samples = views[0] if len(views) == 1 else torch.cat(views)
    if step_weights is None:
        return samples, None
    sizes = [view.shape[0] for view in views]
    tensor = isinstance(step_weights, Tensor)
    per_forward = list(step_weights) if not tensor or step_weights.dim() == 2 else []
    if [tuple(w.shape) for w in per_forward] != [(size,) for size in sizes]:
        given = (
            f"of shape {tuple(step_weights.shape)}"
            if tensor
            else f"of sizes {[tuple(w.shape) for w in per_forward]}"
        )
        raise ValueError(
            f"step_weights {given} do not match the {len(views)} forwards of batch sizes "
            f"{sizes} recorded for layer {layer.name!r}"
        )
    weights = step_weights.reshape(-1) if tensor else torch.cat(per_forward)
    weights = weights.detach().to(samples.dtype)
    return samples, weights / weights.sum()


def sample_average(values: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of ``values`` (S, ...) over samples, weighted by ``weights`` (S,) if given."""
    if weights is None:
        return values[0] if values.shape[0] == 1 else values.mean(0)  # batch 1: exact
    return torch.tensordot(weights, values, dims=1)


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
    name: str,
    cell: nn.RNNCellBase,
    heads: list[nn.Linear],
    gates: int,
    *,
    norms: Sequence[nn.Module] = (),
) -> UnitLayer:
    """Units of a recurrent cell: its rows in every gate in, recurrence and heads out
    (``norms``: layer norms on the new state, whose gain and bias of a unit are reset; the
    last of them is then what the recurrence and heads read, so its output is the units'
    recorded activation).

    A removed unit's mean contribution is moved into the heads' biases only. The
    recurrence reads the zero initial state at the first step, where the unit contributed
    nothing, so moving ``W_hh[:, i]·f̂_i`` into ``bias_hh`` would shift every first step;
    left out, the first step is exactly unchanged and later steps lose the unit's mean
    recurrent input, as they do without any transfer.
    """
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
        activation=norms[-1] if norms else cell,
        incoming=incoming,
        incoming_bias=biases,
        outgoing=outgoing,
        consumer_bias=[None] + [h.bias for h in heads],
        norms=list(norms),
    )


def unit_layer(
    name: str,
    producer: nn.Module,
    activation: nn.Module,
    consumers: Sequence[nn.Module],
    *,
    norms: Sequence[nn.Module] = (),
) -> UnitLayer:
    """The units of a Linear or Conv2d ``producer`` whose activations are the output of
    ``activation`` and are read by every module of ``consumers`` (Linear or Conv2d; a Linear
    may read a conv layer's channels flattened, channel-major, with or without pooling).
    ``norms`` are norm layers with per-unit statistics between producer and activation.

    The hand-written form of what discovery finds, e.g. for a model it cannot trace::

        units=[unit_layer("fc1", model.fc1, model.act1, [model.head])]
    """
    if type(producer) not in PRODUCERS:
        raise ValueError(
            f"unit layer {name!r}: the producer must be a Linear or Conv2d, got "
            f"{type(producer).__name__}"
        )
    if not consumers:
        raise ValueError(f"unit layer {name!r}: at least one consumer reads the units")
    units = producer.weight.shape[0]
    conv = isinstance(producer, nn.Conv2d)
    for consumer in consumers:
        if type(consumer) not in PRODUCERS or (isinstance(consumer, nn.Conv2d) and not conv):
            raise ValueError(
                f"unit layer {name!r}: {type(consumer).__name__} cannot read the units of a "
                f"{type(producer).__name__} (supported: Linear → Linear, Conv2d → Conv2d, "
                "Conv2d → [pool] → flatten → Linear)"
            )
        if isinstance(consumer, nn.Conv2d) and (
            consumer.groups != 1 or consumer.weight.shape[1] != units
        ):
            raise ValueError(
                f"unit layer {name!r}: the Conv2d consumer reads {consumer.weight.shape[1]} "
                f"channels in {consumer.groups} groups, not the {units} units in one group"
            )
    incoming, biases = producer_slices(producer)
    return UnitLayer(
        name=name,
        size=units,
        activation=activation,
        incoming=incoming,
        incoming_bias=biases,
        outgoing=[consumer_slice(consumer, units) for consumer in consumers],
        consumer_bias=[consumer.bias for consumer in consumers],
        norms=list(norms),
        unit_axis=1 if conv else -1,
    )


def _unsupported(where: str, chain: str, why: str) -> ValueError:
    return ValueError(
        f"cannot manage the units of {where} ({chain}): {why}; pass an example input "
        "(find_unit_layers(model, x)) to follow the forward across modules, pass this layer "
        "as units=[unit_layer(...)] (see ponderlife.units), or change the model"
    )


def _sequential_layers(prefix: str, sequential: nn.Sequential, *, root: bool) -> list[UnitLayer]:
    """Unit layers of the chains in ``sequential``; a chain that has hidden units (a
    weight layer followed by an activation) but that this function cannot manage is an
    error naming it, never silently skipped. A trailing activation of the model itself
    (``root``) is its output, not hidden units."""
    # _modules rather than named_children(): a module placed twice must be seen twice.
    children = [(name, m) for name, m in sequential._modules.items() if m is not None]
    layers = []
    for position, (name, producer) in enumerate(children):
        if not isinstance(producer, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)):
            continue
        norms, activation, consumer, flattened = [], None, None, False
        chain = [type(producer).__name__]
        for _, module in children[position + 1 :]:
            if activation is None and isinstance(module, NORMS):
                norms.append(module)
            elif activation is None and isinstance(module, ACTIVATIONS):
                activation = module
            elif activation is not None and isinstance(module, PASS_THROUGH):
                flattened |= isinstance(module, nn.Flatten)
            elif activation is not None:
                consumer = module
            else:
                break
            chain.append(type(module).__name__)
            if consumer is not None:
                break
        if activation is None:
            continue  # no hidden units here (an output layer, or Linear → Linear)
        where, chain_text = f"layer {prefix}{name}", " → ".join(chain)
        if type(producer) not in PRODUCERS:
            raise _unsupported(where, chain_text, "only Linear and Conv2d units are supported")
        if consumer is None:
            if root:
                continue  # the model's own output activation
            raise _unsupported(
                where,
                chain_text,
                "the layer reading these units is outside this nn.Sequential",
            )
        conv = isinstance(producer, nn.Conv2d)
        if type(consumer) not in PRODUCERS or (
            isinstance(consumer, nn.Linear) and conv != flattened
        ):
            raise _unsupported(
                where,
                chain_text,
                f"{type(consumer).__name__} cannot be read as their consumer (supported: "
                "Linear/Conv2d → Linear/Conv2d, Conv2d → Flatten → Linear)",
            )
        layers.append(unit_layer(f"{prefix}{name}", producer, activation, [consumer], norms=norms))
    return layers


def _protocol_layers(model: nn.Module) -> tuple[list[UnitLayer], set[int]]:
    """Layers of the modules that describe their own units (``unit_layers()``) and the ids
    of every module they claim."""
    layers: list[UnitLayer] = []
    claimed: set[int] = set()
    for name, module in model.named_modules():
        if hasattr(module, "unit_layers") and id(module) not in claimed:
            layers.extend(module.unit_layers(f"{name}." if name else ""))
            claimed.update(id(m) for m in module.modules())
    return layers, claimed


def find_unit_layers(model: nn.Module, example: Any = None) -> list[UnitLayer]:
    """Discover the unit layers of ``model`` (see the module docstring).

    Without ``example``, chains are read from the ``nn.Sequential`` containers of the
    model. With ``example`` (the model's input, or a tuple of its positional arguments),
    one forward is traced (:func:`trace_unit_layers`) and chains follow the order in which
    modules actually run, across submodule boundaries. Modules with a ``unit_layers()``
    method describe their own units either way.

    Raises ``ValueError`` when nothing is found, rather than managing nothing silently.
    """
    if example is not None:
        return trace_unit_layers(model, example)
    layers, claimed = _protocol_layers(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential) and id(module) not in claimed:
            prefix = f"{name}." if name else ""
            layers.extend(_sequential_layers(prefix, module, root=module is model))
    if not layers:
        raise ValueError(
            f"found no hidden units to manage in {type(model).__name__}: expected "
            "Linear/Conv2d → activation → Linear/Conv2d chains in nn.Sequential, or modules "
            "with a unit_layers() method; pass an example input to follow the forward "
            "(find_unit_layers(model, x)), or units=[unit_layer(...)] explicitly"
        )
    check_unit_layers(model, layers)
    return layers


# ---- discovery by tracing one forward ------------------------------------------------------


# Functions through which units keep their identity: views, copies, sample selection,
# dropout and pooling. Any other function reading the activations ends the chain.
_PASS_FUNCTIONS = frozenset(
    {
        "view",
        "reshape",
        "flatten",
        "contiguous",
        "clone",
        "to",
        "float",
        "__getitem__",
        "index_select",
        "dropout",
        "dropout2d",
        "max_pool2d",
        "avg_pool2d",
        "adaptive_max_pool2d",
        "adaptive_avg_pool2d",
    }
)
# Functional activations and the module to use instead (hooks record modules only).
_ACTIVATION_FUNCTIONS = {
    "relu": "ReLU",
    "relu_": "ReLU",
    "leaky_relu": "LeakyReLU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "gelu": "GELU",
    "elu": "ELU",
    "silu": "SiLU",
    "selu": "SELU",
}


@dataclass(eq=False)
class _Op:
    """One step of a traced forward: a leaf module's call (``module`` set, ``name`` its
    qualified name) or a torch function called outside any leaf module."""

    name: str
    module: nn.Module | None
    inputs: list[Tensor]
    output: Tensor | None

    def reads(self, reached: set[int]) -> bool:
        return any(id(t) in reached for t in self.inputs)

    def where(self) -> str:
        if self.module is None:
            return f"the function {self.name}"
        return f"{self.name} ({type(self.module).__name__})"


def _tensors(value) -> list[Tensor]:
    """Every tensor in a (nested) value: a tensor, a sequence, a dict or a dataclass."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    elif hasattr(value, "__dataclass_fields__"):
        value = [getattr(value, f) for f in value.__dataclass_fields__]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []


def _call_model(model: nn.Module, example: Any):
    return model(*example) if isinstance(example, tuple) else model(example)


class _Tracer(torch.overrides.TorchFunctionMode):
    """Records leaf-module calls (through hooks) and the torch functions called between
    them; functions inside a leaf module or a module that describes its own units are
    that module's business and are not recorded."""

    def __init__(self, model: nn.Module, claimed: set[int]):
        super().__init__()
        self.ops: list[_Op] = []
        self.depth = 0
        names = {id(m): name for name, m in model.named_modules()}
        self.hooks = []
        for module in model.modules():
            leaf = next(module.children(), None) is None
            if id(module) in claimed and not leaf and id(module) != id(model):
                self._hook(module, None)
            elif leaf and id(module) not in claimed:
                self._hook(module, names[id(module)])

    def _hook(self, module: nn.Module, name: str | None) -> None:
        def enter(module, args):
            self.depth += 1

        def leave(module, args, output):
            self.depth -= 1
            if name is not None and self.depth == 0:
                outputs = _tensors(output)
                self.ops.append(_Op(name, module, _tensors(args), outputs[0] if outputs else None))

        self.hooks += [module.register_forward_pre_hook(enter)]
        self.hooks += [module.register_forward_hook(leave)]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        if self.depth == 0:
            outputs = _tensors(output)
            if outputs:
                name = getattr(func, "__name__", str(func))
                inputs = _tensors(list(args)) + _tensors(dict(kwargs or {}))
                self.ops.append(_Op(name, None, inputs, outputs[0]))
        return output

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


@torch.no_grad()
def _trace(model: nn.Module, example: Any, claimed: set[int]) -> tuple[list[_Op], Any]:
    """The ops of one forward of ``example`` in eval mode (no dropout draws, no batch-norm
    update) and the model's output. Every tensor stays referenced, so ids stay unique."""
    tracer = _Tracer(model, claimed)
    modes = {module: module.training for module in model.modules()}
    generators = _own_generators(model)
    states = [generator.get_state() for generator in generators]
    devices = sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices), tracer:
            output = _call_model(model, example)
    finally:
        tracer.remove()
        for module, training in modes.items():
            module.training = training
        for generator, state in zip(generators, states, strict=True):
            generator.set_state(state)
    return tracer.ops, output


def _own_generators(model: nn.Module) -> list[torch.Generator]:
    """The ``torch.Generator`` objects the model's modules hold (PonderNet's halting
    generators), directly or in a list, tuple or dict attribute: a trace must leave the
    run's randomness exactly where it was."""
    found: dict[int, torch.Generator] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, dict):
                value = list(value.values())
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, torch.Generator):
                    found[id(item)] = item
    return list(found.values())


def _suggestion(producer: _Op, activation: str, consumers: str) -> str:
    return (
        f'units=[unit_layer("{producer.name}", model.get_submodule("{producer.name}"), '
        f'model.get_submodule("{activation}"), consumers=[{consumers}])]'
    )


def _sibling_heads(model: nn.Module, name: str, consumer: nn.Module) -> list[nn.Module]:
    """``consumer`` and the modules at the same place in the other entries of the
    ``nn.ModuleDict`` it lies in (a multi-head classifier's heads of other tasks, which
    read the same units but did not run in the traced forward)."""
    parts = name.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        container = model.get_submodule(".".join(parts[:depth])) if depth else model
        if not isinstance(container, nn.ModuleDict) or parts[depth] not in container:
            continue
        rest = ".".join(parts[depth + 1 :])
        heads = []
        for key, head in container.items():
            sibling = head.get_submodule(rest) if rest else head
            if key == parts[depth]:
                heads.append(consumer)
            elif type(sibling) is type(consumer) and (
                sibling.weight.shape[1:] == consumer.weight.shape[1:]
            ):
                heads.append(sibling)
        return heads
    return [consumer]


def _keeps_units(op: _Op, source: Tensor) -> bool:
    """Whether a pass-through function keeps every unit of ``source`` in place: a view or
    copy of each sample (same sample count and size), or a selection of samples."""
    out = op.output
    if op.name not in _PASS_FUNCTIONS or out is None or out.dim() == 0:
        return False
    if op.name == "__getitem__" or op.name == "index_select":
        return out.shape[1:] == source.shape[1:]
    if op.name.endswith("pool2d"):
        return out.dim() == source.dim() and out.shape[:2] == source.shape[:2]
    return out.shape[0] == source.shape[0] and out[0].numel() == source[0].numel()


def _readers(ops: list[_Op], start: int, tensor: Tensor):
    """Consumers (Linear/Conv2d module ops) and other readers of ``tensor`` from
    ``ops[start:]`` on, following pass-through modules and functions; and whether it
    reaches the model's output (``id``s in ``outputs`` are checked by the caller)."""
    reached, shapes = {id(tensor)}, {id(tensor): tensor}
    consumers, others = [], []
    for op in ops[start:]:
        if not op.reads(reached):
            continue
        source = next(shapes[id(t)] for t in op.inputs if id(t) in reached)
        if op.module is not None and type(op.module) in PRODUCERS:
            consumers.append(op)
        elif (op.module is not None and isinstance(op.module, PASS_THROUGH)) or (
            op.module is None and _keeps_units(op, source)
        ):
            if op.output is not None:
                reached.add(id(op.output))
                shapes[id(op.output)] = op.output
        else:
            others.append(op)
    return consumers, others, reached


def trace_unit_layers(model: nn.Module, example: Any) -> list[UnitLayer]:
    """Unit layers found by following one forward of ``example`` through ``model``.

    Leaf modules and the torch functions between them are recorded in the order they run
    (eval mode, no gradients). A Linear/Conv2d whose output passes through norm layers
    into an activation module has units; they are read by every Linear/Conv2d that gets
    that activation's output, directly or through views, sample selection (a multi-head
    classifier's ``x[task_mask]``), dropout, pooling and ``Flatten``, whatever submodule
    each lives in. Units are never silently left out: a functional activation
    (``F.relu``), a reader that is not a Linear/Conv2d (``torch.cat``, a residual ``+``,
    an LSTM) or units that reach no reader are errors naming them and the ``units=``
    call to write instead. A unit read by a multi-head classifier's head is read by every
    task's head. Modules with ``unit_layers()`` describe their own units, untraced.
    """
    layers, claimed = _protocol_layers(model)
    ops, output = _trace(model, example, claimed)
    outputs = {id(t) for t in _tensors(output)}
    kind = type(model).__name__
    found: dict[int, UnitLayer] = {}
    for index, producer in enumerate(ops):
        module = producer.module
        if producer.output is None or not isinstance(
            module, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
        ):
            continue
        # The first reader of each tensor: norms, then the activation module.
        tensor, norms, chain, activation, at = producer.output, [], [producer], None, index
        while activation is None:
            reader = next(
                ((i, op) for i, op in enumerate(ops[at + 1 :], at + 1) if op.reads({id(tensor)})),
                None,
            )
            if reader is None or reader[1].output is None:
                break
            at, op = reader
            if isinstance(op.module, NORMS):
                norms.append(op.module)
            elif isinstance(op.module, ACTIVATIONS):
                activation = op
            elif op.module is None and op.name in _ACTIVATION_FUNCTIONS:
                if id(op.output) in outputs:
                    break  # the model's own output
                raise ValueError(
                    f"the units of {kind}.{producer.name} go through {op.where()}; their "
                    "activations are recorded by a hook on an activation module, so use "
                    f"an nn.{_ACTIVATION_FUNCTIONS[op.name]}() module there"
                )
            else:
                break  # no hidden units here (an output layer, or Linear → Linear)
            chain.append(op)
            tensor = op.output
        if activation is None:
            continue
        text = " → ".join(op.where() for op in chain)
        if type(module) not in PRODUCERS:
            raise _unsupported(
                f"{kind}.{producer.name}", text, "only Linear and Conv2d units are supported"
            )
        consumers, others, reached = _readers(ops, at + 1, activation.output)
        if others:
            raise ValueError(
                f"cannot manage the units of {kind}.{producer.name} ({text}): they are read "
                f"by {', '.join(op.where() for op in others)}, which is not a Linear/Conv2d "
                "reached through views, sample selection, dropout or pooling. If the layers "
                "that read them still see each unit on its own (an elementwise op), pass "
                + _suggestion(producer, activation.name, "<the layers reading them>")
            )
        if not consumers:
            if reached & outputs:
                continue  # the model's own output activation
            raise ValueError(
                f"no Linear/Conv2d reads the units of {kind}.{producer.name} ({text}); pass "
                + _suggestion(producer, activation.name, "<the layers reading them>")
            )
        heads: list[nn.Module] = []
        for consumer in consumers:
            for head in _sibling_heads(model, consumer.name, consumer.module):
                if all(head is not m for m in heads):
                    heads.append(head)
        layer = unit_layer(producer.name, module, activation.module, heads, norms=norms)
        previous = found.get(id(activation.module))
        if previous is not None and previous.name != layer.name:
            raise ValueError(
                f"the activation module {activation.name} of {kind} follows both "
                f"{previous.name} and {layer.name}; give each place its own module"
            )
        found[id(activation.module)] = layer
    layers.extend(found.values())
    if not layers:
        run = [op.where() for op in ops if op.module is not None]
        looked = ", ".join(run[:16]) + (" ..." if len(run) > 16 else "")
        pair = next(
            (
                (a, b)
                for a, b in itertools.pairwise(op for op in ops if op.module is not None)
                if type(a.module) in PRODUCERS and isinstance(b.module, ACTIVATIONS)
            ),
            None,
        )
        hint = (
            _suggestion(pair[0], pair[1].name, "<the layers reading them>")
            if pair
            else "units=[unit_layer(name, producer, activation, consumers=[...])]"
        )
        raise ValueError(
            f"found no hidden units to manage in {kind}: no Linear/Conv2d → [norm] → "
            f"activation → Linear/Conv2d chain ran in its forward (modules run, in order: "
            f"{looked or 'none'}); pass them explicitly, e.g. {hint}"
        )
    check_unit_layers(model, layers)
    return layers


def resolve_unit_layers(
    model: nn.Module,
    units: Sequence[UnitLayer] | Callable[[nn.Module], Sequence[UnitLayer]] | None,
    example: Any = None,
) -> list[UnitLayer]:
    """The layers a plasticity method manages: ``units`` if given (a list, or a function
    of the model returning one, checked against ``model``), else those
    :func:`find_unit_layers` discovers (tracing ``example`` when given)."""
    if units is None:
        return find_unit_layers(model, example)
    layers = list(units(model) if callable(units) else units)
    check_unit_layers(model, layers)
    return layers


def check_unit_layers(model: nn.Module, layers: Sequence[UnitLayer]) -> None:
    """Refuse unit layers that are not ``model``'s own (built on another model, or on a
    head the model has since replaced), or whose activations cannot be told apart:
    duplicate names, two layers sharing an activation module, or an activation module
    placed at several places of ``model`` (its hook would record every place as one
    layer)."""
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"unit layer names must be unique, got {names}")
    places: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        places.setdefault(id(module), []).append(name or type(model).__name__)
    parameters = {id(p) for p in model.parameters()}
    owners: dict[int, str] = {}
    for layer in layers:
        key = id(layer.activation)
        where = places.get(key, [])
        parts = [*layer.incoming, *layer.incoming_bias, *layer.outgoing]
        if not where or any(id(part.param) not in parameters for part in parts):
            raise ValueError(
                f"unit layer {layer.name!r} is not part of this {type(model).__name__}: its "
                "activation module or a weight it names belongs to another model (a strategy "
                "that replaces the model, such as GDumb, or a head that grew); pass units as a "
                "function of the model, units=lambda model: [unit_layer(...)]"
            )
        if key in owners or len(where) > 1:
            module = type(layer.activation).__name__
            shared = f"layers {owners[key]!r} and {layer.name!r}" if key in owners else None
            raise ValueError(
                f"the {module} module of unit layer {layer.name!r} is used at several places "
                f"({shared or ', '.join(where)}); activations are recorded per module, so "
                f"give each place its own module (e.g. a separate nn.{module}() after each "
                "layer)"
            )
        owners[key] = layer.name


class ActivationRecorder:
    """Forward hooks on each layer's activation module that only *record* its output;
    whoever owns the recorder takes the records with :meth:`pop`.

    What is recorded: by default forwards in training mode (``training_only=True``), or
    every forward (``training_only=False``, e.g. a diagnostic probe). Setting ``gate`` to
    True or False overrides the mode: a strategy plugin opens it for the forwards of one
    update (some strategies train with modules in eval mode) and closes it after.
    """

    def __init__(self, layers: Sequence[UnitLayer], *, training_only: bool = True):
        self.training_only = training_only
        self.gate: bool | None = None
        self._records: dict[str, list[Tensor]] = {layer.name: [] for layer in layers}
        self._hooks = [
            layer.activation.register_forward_hook(self._recorder(layer.name, layer.activation))
            for layer in layers
        ]

    def _recorder(self, name: str, owner: nn.Module):
        # A deep copy of the model (LwF's teacher, say) copies this hook too; the identity
        # check keeps the copy's forwards out of the records.
        def record(module: nn.Module, inputs, output: Tensor) -> None:
            gate = self.gate
            wanted = (module.training or not self.training_only) if gate is None else gate
            if wanted and module is owner:
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
