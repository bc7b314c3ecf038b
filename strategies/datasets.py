"""Avalanche datasets whose samples carry a difficulty tag: ``(x, y, difficulty, task)``."""

from __future__ import annotations

import torch
from avalanche.benchmarks.utils import DataAttribute, make_avalanche_dataset
from avalanche.benchmarks.utils.classification_dataset import (
    TaskAwareSupervisedClassificationDataset,
)
from torch import Tensor
from torch.utils.data import TensorDataset

__all__ = ["TensorBatches", "experience_difficulty", "tagged_dataset", "tensor_source"]


def tagged_dataset(x: Tensor, y: Tensor, difficulty: Tensor, task_label: int = 0):
    """An Avalanche dataset of ``(x, y, difficulty, task_label)`` samples with the
    ``targets`` and ``targets_task_labels`` attributes Avalanche's metrics need."""
    labels = torch.full((len(x),), task_label, dtype=torch.long)
    dataset = TensorDataset(x, y, difficulty.to(torch.long), labels)
    attributes = [
        DataAttribute(y.tolist(), "targets"),
        DataAttribute(labels.tolist(), "targets_task_labels", use_in_getitem=False),
    ]
    if y.is_floating_point():  # regression: no class structure to expose
        return make_avalanche_dataset(dataset, data_attributes=attributes)
    # Class labels: the task-aware classification dataset LwF, replay buffers and
    # class-incremental tools expect.
    return TaskAwareSupervisedClassificationDataset([dataset], data_attributes=attributes)


def experience_difficulty(experience) -> Tensor:
    """The difficulty tags of an experience's samples, (N,) int64."""
    dataset = experience.dataset
    tensors = tensor_source(dataset)
    if tensors is not None:
        return tensors[2]
    return torch.stack([torch.as_tensor(dataset[i][2]) for i in range(len(dataset))])


def tensor_source(dataset) -> tuple[Tensor, ...] | None:
    """The tensors behind ``dataset`` when it is exactly one ``TensorDataset`` (optionally
    subset) with no transforms, as :func:`tagged_dataset` builds; None otherwise."""
    flat = getattr(dataset, "_flat_data", None)
    if flat is None or len(getattr(flat, "_datasets", ())) != 1:
        return None
    source = flat._datasets[0]
    groups = (flat._transform_groups, flat._frozen_transform_groups)
    if not isinstance(source, TensorDataset) or any(
        transform is not None for g in groups for transform in g.transform_groups.values()
    ):
        return None
    if flat._indices is None:
        return tuple(source.tensors)
    chosen = torch.as_tensor(flat._indices, dtype=torch.long)
    return tuple(t[chosen] for t in source.tensors)


class TensorBatches:
    """Minibatches sliced straight from tensors: what a DataLoader over a TensorDataset
    yields, without a Python call per sample. Shuffling draws from torch's global RNG."""

    def __init__(self, tensors: tuple[Tensor, ...], batch_size: int, shuffle: bool):
        self.tensors, self.batch_size, self.shuffle = tensors, batch_size, shuffle

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)

    def __iter__(self):
        count = len(self.tensors[0])
        order = torch.randperm(count) if self.shuffle else None
        for first in range(0, count, self.batch_size):
            if order is None:
                yield tuple(t[first : first + self.batch_size] for t in self.tensors)
            else:
                chosen = order[first : first + self.batch_size]
                yield tuple(t[chosen] for t in self.tensors)
