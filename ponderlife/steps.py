"""Step functions ``s(x, h_n) → (ŷ_n, h_{n+1}, z_n)`` shared by PonderNet, ACT and fixed depth.

A step function is an ``nn.Module`` with two methods:

* ``initial_state(x)`` returns h_1 for a batch of inputs (batch first);
* ``forward(x, state)`` returns a :class:`StepOutput`: the prediction ŷ_n of shape
  (B, *out), the next state (batch first), and the *halting logit* z_n of shape (B,)
  with λ_n = sigmoid(z_n). Logits rather than λ keep the halting maths in log space.

Every built-in step sees the input ``x`` at every step, the first included: h_1 is zeros,
so the first step's output already depends on x (an input-blind first step is a known
bug of public PonderNet code). Every built-in has a ``halting`` ``nn.Linear`` head whose
bias can be initialised with ``halting_bias``: a negative bias (about −3, λ ≈ 0.05) makes
the net ponder long at the start of training, which a 2026 report (Sapunov) found avoids
the early collapse to one step seen with PyTorch's default initialisation.

Any module with this contract works; the state only has to be a tensor whose first
dimension is the batch, so samples that halted can be dropped from the computation.

A step may also define ``prepare(x)``: what every step computes from x alone (a recurrent
cell's input projection ``W_ih x + b_ih``), computed once per unroll. The unrolls of
PonderNet, ACT and fixed depth call it once per forward and pass its result (its rows, as
samples halt) to ``forward`` in place of x; :func:`prepare` is that call, and x itself for
a step without the method.

A step whose heads read the new state alone can split its forward (subclass
:class:`SplitStep`): ``advance(x, state)`` returns the new state, and ``predict(state)`` and
``halt_logit(state)`` are the two heads, applied to states of any leading shape. With
gradients enabled, PonderNet then runs the output and halting heads once over all steps'
states after the loop instead of once per step (the halting decisions inside the loop use
a gradient-free evaluation of the halting head); the results are the same. The recurrent
and residual MLP steps split; the transformer step, whose heads read a pooled state, does
not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ponderlife.units import UnitLayer, cell_unit_layer, consumer_slice, producer_slices


class StepOutput(NamedTuple):
    prediction: Tensor  # (B, *out)
    state: Tensor  # (B, ...)
    halt_logit: Tensor  # (B,)


@dataclass(frozen=True)
class PreparedInput:
    """A batch of inputs with the cell's input projection (B, gates · hidden) computed once
    for all steps; rows are selected like a tensor's (indexing or ``index_select``)."""

    x: Tensor
    projected: Tensor

    def __getitem__(self, rows) -> PreparedInput:
        return PreparedInput(self.x[rows], self.projected[rows])

    def index_select(self, dim: int, index: Tensor) -> PreparedInput:
        return PreparedInput(
            self.x.index_select(dim, index), self.projected.index_select(dim, index)
        )

    @property
    def shape(self) -> torch.Size:
        """The input's shape (batch first)."""
        return self.x.shape


def prepare(step: nn.Module, x: Tensor):
    """``step.prepare(x)`` when the step has it, else x (see the module docstring)."""
    method = getattr(step, "prepare", None)
    return x if method is None else method(x)


class StepFunction(nn.Module):
    """Base class of step functions; subclasses implement ``initial_state`` and ``forward``."""

    def initial_state(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, x: Tensor, state: Tensor) -> StepOutput:  # pragma: no cover - interface
        raise NotImplementedError


class SplitStep(StepFunction):
    """A step function whose heads read the new state alone (see the module docstring):
    ``forward(x, h) = (predict(h'), h', halt_logit(h'))`` with ``h' = advance(x, h)``.
    Subclasses implement ``advance``; the heads default to the ``output`` and ``halting``
    linear maps. ``batched_heads = False`` (on the class or an instance) makes the unrolls
    call ``forward`` per step instead, e.g. for a hook that must see every step's heads."""

    output: nn.Module
    halting: nn.Module
    batched_heads: bool = True

    def advance(self, x, state: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, state: Tensor) -> Tensor:
        """ŷ from new states of shape (..., state)."""
        return self.output(state)

    def halt_logit(self, state: Tensor) -> Tensor:
        """The halting logit z from new states of shape (..., state), shape (...)."""
        return self.halting(state).squeeze(-1)

    def forward(self, x, state: Tensor) -> StepOutput:
        state = self.advance(x, state)
        return StepOutput(self.predict(state), state, self.halt_logit(state))


class HaltingHead(nn.Linear):
    """The λ head: a linear map to one logit. ``halting_bias`` sets its initial bias, at
    construction and at every ``reset_parameters()`` (so a full reset gives the model it
    was built as); None keeps PyTorch's initialisation."""

    def __init__(self, in_features: int, halting_bias: float | None = None):
        if halting_bias is not None and not math.isfinite(halting_bias):
            raise ValueError(f"halting_bias must be a finite number or None, got {halting_bias!r}")
        self.halting_bias = halting_bias  # read by reset_parameters() inside __init__
        super().__init__(in_features, 1)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.halting_bias is not None:
            with torch.no_grad():
                self.bias.fill_(self.halting_bias)


def halting_head(in_features: int, halting_bias: float | None) -> HaltingHead:
    """The λ head of the built-in step functions (see :class:`HaltingHead`)."""
    return HaltingHead(in_features, halting_bias)


class _CellStep(SplitStep):
    """A recurrent cell whose hidden state feeds the next step, the output and halting heads.
    With ``layer_norm`` the new hidden state is layer-normalised before it goes anywhere:
    ``h_{n+1} = LayerNorm(cell(x, h_n))``.

    The input is the same at every step, so :meth:`prepare` computes the cell's input
    projection once per unroll and each step adds only the recurrent part (one matrix
    product fewer per step and in its backward). The new state passes through
    ``new_state`` (an identity), whose output is what plasticity methods record.
    """

    def __init__(
        self,
        cell: nn.RNNCellBase,
        output_size: int,
        halting_bias: float | None,
        layer_norm: bool = False,
    ):
        super().__init__()
        self.cell = cell
        self.new_state = nn.Identity()
        self.norm = nn.LayerNorm(cell.hidden_size) if layer_norm else None
        self.output = nn.Linear(cell.hidden_size, output_size)
        self.halting = halting_head(cell.hidden_size, halting_bias)

    def initial_state(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.cell.hidden_size)

    def prepare(self, x: Tensor) -> PreparedInput:
        return PreparedInput(x, F.linear(x, self.cell.weight_ih, self.cell.bias_ih))

    def advance(self, x: Tensor | PreparedInput, state: Tensor) -> Tensor:
        if isinstance(x, PreparedInput):
            hidden = self._recur(x.projected, state)
        else:
            hidden = self.cell(x, state)
        hidden = self.new_state(hidden)
        return hidden if self.norm is None else self.norm(hidden)

    def _recur(self, projected: Tensor, state: Tensor) -> Tensor:
        """The cell's update from its input projection: what ``self.cell`` computes, in its
        order of operations (equal to it, or one unit in the last place off at sizes where
        its kernels round differently)."""
        raise NotImplementedError  # pragma: no cover - each cell step defines it

    def unit_layers(self, prefix: str = "") -> list[UnitLayer]:
        """The cell's hidden units: they feed the recurrence, the output and halting heads
        (through the layer norm if any: its output is what utilities measure, and its gain
        and bias of a replaced unit are reset)."""
        gates = self.cell.weight_ih.shape[0] // self.cell.hidden_size
        norms = [] if self.norm is None else [self.norm]
        heads = [self.output, self.halting]
        layer = cell_unit_layer(f"{prefix}cell", self.cell, heads, gates, norms=norms)
        if self.norm is None:
            layer.activation = self.new_state  # both forward paths pass through it
        return [layer]


class RNNStep(_CellStep):
    """The paper's parity model: a tanh RNN cell fed the same input at every step.

    ``h_{n+1} = tanh(W_x x + W_h h_n + b)``, ``ŷ_n = W_y h_{n+1}``, ``z_n = w_λ·h_{n+1}``
    (``layer_norm``: h_{n+1} layer-normalised, see :class:`_CellStep`).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        halting_bias: float | None = None,
        layer_norm: bool = False,
    ):
        cell = nn.RNNCell(input_size, hidden_size, nonlinearity="tanh")
        super().__init__(cell, output_size, halting_bias, layer_norm)

    def _recur(self, projected: Tensor, state: Tensor) -> Tensor:
        return torch.tanh(projected + F.linear(state, self.cell.weight_hh, self.cell.bias_hh))


class GRUStep(_CellStep):
    """A GRU cell fed the same input at every step, with linear output and halting heads
    (``layer_norm``: the new state layer-normalised, see :class:`_CellStep`)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        halting_bias: float | None = None,
        layer_norm: bool = False,
    ):
        super().__init__(nn.GRUCell(input_size, hidden_size), output_size, halting_bias, layer_norm)

    def _recur(self, projected: Tensor, state: Tensor) -> Tensor:
        # PyTorch's GRU cell: r, z, n gates in that order; the reset gate scales the
        # recurrent part of n only.
        gates = F.linear(state, self.cell.weight_hh, self.cell.bias_hh)
        x_r, x_z, x_n = projected.chunk(3, dim=1)
        h_r, h_z, h_n = gates.chunk(3, dim=1)
        reset = torch.sigmoid(x_r + h_r)
        update = torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset * h_n)
        return candidate + update * (state - candidate)


class ResidualMLPStep(SplitStep):
    """A pre-norm residual MLP block on a vector state:

    ``h_{n+1} = h_n + W_2 relu(W_1 [x, LayerNorm(h_n)])``, heads read h_{n+1}.

    ``layer_norm`` also normalises the hidden pre-activations, ``relu(LayerNorm(W_1 [...]))``
    (the layer normalisation of Lyle et al. 2024, which they pair with weight decay).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        state_size: int | None = None,
        halting_bias: float | None = None,
        layer_norm: bool = False,
    ):
        super().__init__()
        self.state_size = state_size or hidden_size
        self.norm = nn.LayerNorm(self.state_size)
        self.fc1 = nn.Linear(input_size + self.state_size, hidden_size)
        self.hidden_norm = nn.LayerNorm(hidden_size) if layer_norm else None
        self.activation = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, self.state_size)
        self.output = nn.Linear(self.state_size, output_size)
        self.halting = halting_head(self.state_size, halting_bias)

    def initial_state(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.state_size)

    def advance(self, x: Tensor, state: Tensor) -> Tensor:
        hidden = self.fc1(torch.cat([x, self.norm(state)], dim=-1))
        if self.hidden_norm is not None:
            hidden = self.hidden_norm(hidden)
        return state + self.fc2(self.activation(hidden))

    def unit_layers(self, prefix: str = "") -> list[UnitLayer]:
        """The MLP's hidden units (fc1 → activation → fc2); the residual stream is not managed."""
        incoming, biases = producer_slices(self.fc1)
        return [
            UnitLayer(
                name=f"{prefix}fc1",
                size=self.fc1.out_features,
                activation=self.activation,
                incoming=incoming,
                incoming_bias=biases,
                outgoing=[consumer_slice(self.fc2, self.fc1.out_features)],
                consumer_bias=[self.fc2.bias],
                norms=[] if self.hidden_norm is None else [self.hidden_norm],
            )
        ]


class TransformerStep(StepFunction):
    """One weight-shared pre-norm transformer encoder block applied at every step
    (Universal-Transformer style) to a sequence state of shape (B, L, d_model).

    Inputs are token ids (B, L) when ``vocab_size`` is given, else feature vectors
    (B, L, input_size). The embedded input plus a learned position embedding is added to
    the state before every step. Heads read the mean of the state over the non-padding
    positions (``pad_token`` marks padding in token inputs).
    """

    def __init__(
        self,
        output_size: int,
        *,
        d_model: int = 64,
        nhead: int = 4,
        dim_feedforward: int = 128,
        max_len: int = 256,
        vocab_size: int | None = None,
        input_size: int | None = None,
        pad_token: int | None = None,
        halting_bias: float | None = None,
    ):
        super().__init__()
        if (vocab_size is None) == (input_size is None):
            raise ValueError("TransformerStep needs exactly one of vocab_size or input_size")
        if pad_token is not None and vocab_size is None:
            raise ValueError("pad_token only applies to token inputs (give vocab_size)")
        self.d_model = d_model
        self.pad_token = pad_token
        self.embed: nn.Module = (
            nn.Embedding(vocab_size, d_model, padding_idx=pad_token)
            if vocab_size is not None
            else nn.Linear(input_size, d_model)
        )
        self.position = nn.Embedding(max_len, d_model)
        self.block = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True, norm_first=True
        )
        self.output = nn.Linear(d_model, output_size)
        self.halting = halting_head(d_model, halting_bias)

    def initial_state(self, x: Tensor) -> Tensor:
        return torch.zeros(
            x.shape[0], x.shape[1], self.d_model, device=x.device, dtype=self.position.weight.dtype
        )

    def _padding(self, x: Tensor) -> Tensor | None:
        return None if self.pad_token is None else x == self.pad_token

    def forward(self, x: Tensor, state: Tensor) -> StepOutput:
        positions = torch.arange(x.shape[1], device=x.device)
        padding = self._padding(x)
        state = self.block(
            state + self.embed(x) + self.position(positions), src_key_padding_mask=padding
        )
        if padding is None:
            pooled = state.mean(dim=1)
        else:
            keep = (~padding).unsqueeze(-1).to(state.dtype)
            pooled = (state * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return StepOutput(self.output(pooled), state, self.halting(pooled).squeeze(-1))
