"""Avalanche datasets whose samples carry a difficulty tag: ``(x, y, difficulty, task)``."""

from __future__ import annotations

import torch
from avalanche.benchmarks.utils import DataAttribute, make_avalanche_dataset
from avalanche.benchmarks.utils.classification_dataset import (
    TaskAwareSupervisedClassificationDataset,
)
from torch import Tensor
from torch.utils.data import TensorDataset

__all__ = ["experience_difficulty", "tagged_dataset"]


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
    return torch.stack([torch.as_tensor(dataset[i][2]) for i in range(len(dataset))])
