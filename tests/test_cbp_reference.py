"""Continual backprop's selections, step by step, against a plain transcription of the
reference generate-and-test (Dohare et al.'s ``lop`` code: GnT for dense layers, ConvGnT
for conv layers), written here from the reference's formulas and not from our code.

The transcription keeps its own utilities, means, ages and accumulators; it only reads
the model's weights and the activations of each training forward (computed here with a
plain loop over the modules). At every step both must pick the same units.

The reference averages the outgoing |w| over a consumer's outputs where the paper sums
them: a positive constant per layer, so rankings (and selections) are the same. For a
recurrent cell, which the reference does not cover, the transcription follows the
paper's Eq. 1 with every consumer (recurrence, output head, halting head) summed and the
ponder steps weighted by their reach probability.
"""

import pytest
import torch
from torch import nn

from ponderlife import ContinualBackprop, GRUStep, PonderNet, RNNStep

UTILITIES = ["contribution", "mean_corrected_contribution", "adaptable_contribution"]
ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.LeakyReLU)


class ReferenceGenerateAndTest:
    """The reference's per-layer generate-and-test state and rules, in float64."""

    def __init__(self, sizes, *, decay, rate, maturity, utility):
        self.decay, self.rate, self.maturity, self.utility = decay, rate, maturity, utility
        self.util = [torch.zeros(n, dtype=torch.float64) for n in sizes]
        self.mean = [torch.zeros(n, dtype=torch.float64) for n in sizes]
        self.ages = [torch.zeros(n, dtype=torch.float64) for n in sizes]
        self.accumulated = [0.0 for _ in sizes]

    def update(self, i, new_mean, deviation_fn, out_mag, in_mag):
        """``new_mean``: this step's mean activation per unit; ``deviation_fn(f̂)`` the
        step's utility before weights, given the bias-corrected mean (0 for contribution)."""
        decay = self.decay
        self.ages[i] += 1
        correction = 1 - decay ** self.ages[i]
        self.mean[i] = decay * self.mean[i] + (1 - decay) * new_mean
        centre = 0.0 if self.utility == "contribution" else self.mean[i] / correction
        value = deviation_fn(centre, out_mag)
        if self.utility == "adaptable_contribution":
            value = value / in_mag
        self.util[i] = decay * self.util[i] + (1 - decay) * value

    def select(self, i):
        eligible = torch.where(self.ages[i] > self.maturity)[0]
        if eligible.numel() == 0:
            return []
        self.accumulated[i] += self.rate * eligible.numel()
        number = int(self.accumulated[i])
        self.accumulated[i] -= number
        if number == 0:
            return []
        corrected = self.util[i] / (1 - self.decay ** self.ages[i])
        chosen = eligible[torch.topk(-corrected[eligible], number).indices]
        self.util[i][chosen] = 0.0
        self.mean[i][chosen] = 0.0
        self.ages[i][chosen] = 0.0
        return sorted(chosen.tolist())


def sequential_features(model: nn.Sequential, x):
    """Each activation module's output in one plain forward, by the producer's index."""
    features, h, producer = {}, x, None
    for name, module in model.named_children():
        h = module(h)
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            producer = name
        if isinstance(module, ACTIVATIONS):
            features[producer] = h.detach().double()
    return features


def reference_layer_update(ref, i, producer, consumer, features):
    """ConvGnT.update_utility / GnT.update_utility for one layer, reference shapes."""
    w_in = producer.weight.detach().double()
    w_out = consumer.weight.detach().double()
    in_mag = w_in.abs().mean(dim=tuple(range(1, w_in.dim())))
    if isinstance(producer, nn.Linear):  # dense → dense
        out_mag = w_out.abs().mean(dim=0)
        mean = features.mean(dim=0)

        def deviation(centre, out_mag):
            return out_mag * (features - centre).abs().mean(dim=0)

    elif isinstance(consumer, nn.Conv2d):  # conv → conv
        out_mag = w_out.abs().mean(dim=(0, 2, 3))
        mean = features.mean(dim=(0, 2, 3))

        def deviation(centre, out_mag):
            centre = centre.view(1, -1, 1, 1) if torch.is_tensor(centre) else centre
            return out_mag * (features - centre).abs().mean(dim=(0, 2, 3))

    else:  # conv → flatten → linear: each position pairs with its own column
        channels = features.shape[1]
        positions = features.shape[2] * features.shape[3]
        flat = features.flatten(1)
        out_mag = w_out.abs().mean(dim=0)
        mean = flat.mean(dim=0).view(channels, positions).mean(dim=1)

        def deviation(centre, out_mag):
            if torch.is_tensor(centre):
                centre = centre.repeat_interleave(positions).view(1, -1)
            per_column = out_mag * (flat - centre).abs().mean(dim=0)
            return per_column.view(channels, positions).mean(dim=1)

    ref.update(i, mean, deviation, out_mag, in_mag)


def ours_replaced(cbp, names):
    return [sorted(torch.nonzero(cbp.states[n].age == 0).flatten().tolist()) for n in names]


def dense_net():
    return nn.Sequential(
        nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6), nn.LeakyReLU(0.1), nn.Linear(6, 2)
    )


def conv_net():
    # 6×6 input → conv 3×3 → 4 channels 4×4 → conv 3×3 → 3 channels 2×2 → Linear.
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.Tanh(),
        nn.Conv2d(4, 3, 3),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(3 * 2 * 2, 2),
    )


@pytest.mark.parametrize("utility", UTILITIES)
@pytest.mark.parametrize(
    ("build", "input_shape", "layers"),
    [
        (dense_net, (16, 4), [("0", 0, 2), ("2", 2, 4)]),
        (conv_net, (8, 1, 6, 6), [("0", 0, 2), ("2", 2, 5)]),
    ],
    ids=["dense", "conv"],
)
def test_selections_equal_the_reference_generate_and_test_step_by_step(
    build, input_shape, layers, utility
):
    torch.manual_seed(0)
    model = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    settings = {"decay_rate": 0.9, "replacement_rate": 0.2, "maturity_threshold": 3}
    cbp = ContinualBackprop(model, optimizer, utility=utility, bias_transfer=False, **settings)
    sizes = [model[producer].weight.shape[0] for _, producer, _ in layers]
    ref = ReferenceGenerateAndTest(sizes, decay=0.9, rate=0.2, maturity=3, utility=utility)
    g = torch.Generator().manual_seed(1)
    names = [name for name, _, _ in layers]
    replacements = 0
    for _ in range(40):
        x = torch.randn(*input_shape, generator=g)
        features = sequential_features(model, x)
        loss = (model(x) - 1.0).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        expected = []
        for i, (name, producer, consumer) in enumerate(layers):
            reference_layer_update(ref, i, model[producer], model[consumer], features[name])
            expected.append(ref.select(i))
        replaced = cbp.step()
        ours = ours_replaced(cbp, names)
        assert ours == expected
        replacements += sum(replaced.values())
    assert replacements >= 10  # the comparison covered many selections


@pytest.mark.parametrize("utility", UTILITIES)
@pytest.mark.parametrize("step_class", [RNNStep, GRUStep])
def test_recurrent_selections_equal_a_transcription_with_reach_weighted_steps(
    step_class, utility, cell_states
):
    torch.manual_seed(0)
    step = step_class(3, 6, 2)
    model = PonderNet(step, max_steps=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    cbp = ContinualBackprop(
        model,
        optimizer,
        utility=utility,
        decay_rate=0.9,
        replacement_rate=0.2,
        maturity_threshold=3,
        bias_transfer=False,
    )
    ref = ReferenceGenerateAndTest([6], decay=0.9, rate=0.2, maturity=3, utility=utility)
    g = torch.Generator().manual_seed(2)
    cell = step.cell
    gates = cell.weight_ih.shape[0] // 6
    replacements = 0
    for _ in range(40):
        x = torch.randn(8, 3, generator=g)
        out = model(x)
        steps = out.p.shape[0]
        hidden = cell_states(cell, x, steps).double()  # (N, B, units)
        p = out.p.detach().double()
        # Reach of step n: the mass not yet halted before n, 1 − Σ_{j<n} p_j.
        reach = torch.stack([1 - p[:n].sum(0) for n in range(steps)])
        weights = (reach / reach.sum())[..., None]
        (out.prediction.pow(2).mean() + out.p.mean()).backward()
        optimizer.step()
        optimizer.zero_grad()

        consumers = [cell.weight_hh, step.output.weight, step.halting.weight]
        out_mag = sum(w.detach().double().abs().sum(dim=0) for w in consumers)
        in_mag = sum(
            w.detach().double().abs().view(gates, 6, -1).sum(dim=(0, 2))
            for w in (cell.weight_ih, cell.weight_hh)
        )

        def deviation(centre, out_mag, hidden=hidden, weights=weights):
            return out_mag * (weights * (hidden - centre).abs()).sum(dim=(0, 1))

        ref.update(0, (weights * hidden).sum(dim=(0, 1)), deviation, out_mag, in_mag)
        expected = [ref.select(0)]
        replaced = cbp.step(step_weights=reach.float())
        assert ours_replaced(cbp, ["step.cell".replace(".", "__")]) == expected
        replacements += sum(replaced.values())
    assert replacements >= 10
