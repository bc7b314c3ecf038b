"""Avalanche datasets whose samples carry a difficulty tag, ``(x, y, difficulty, task)``,
and the fast tensor path over datasets built from tensors.

The fast path (:func:`tensor_source`, :class:`TensorBatches`) reads Avalanche 0.6.0's
dataset internals: ``AvalancheDataset._flat_data`` and ``._data_attributes``, and the flat
data's ``_datasets``, ``_indices``, ``_transform_groups`` and ``_frozen_transform_groups``.
When an Avalanche dataset lacks one of them (an Avalanche upgrade changed them), it raises
:class:`AvalancheInternalsError` naming the version and the attribute instead of quietly
falling back to the slow path; datasets that legitimately are not plain tensors
(transforms, concatenations such as replay buffers, custom collate functions) fall back.
"""

from __future__ import annotations

import avalanche
import torch
from avalanche.benchmarks.utils import AvalancheDataset, DataAttribute, make_avalanche_dataset
from avalanche.benchmarks.utils import classification_dataset as _classification
from avalanche.benchmarks.utils.classification_dataset import (
    TaskAwareSupervisedClassificationDataset,
)
from avalanche.benchmarks.utils.transforms import TupleTransform
from torch import Tensor
from torch.utils.data import TensorDataset, default_collate

__all__ = [
    "AvalancheInternalsError",
    "TensorBatches",
    "experience_difficulty",
    "tagged_dataset",
    "tensor_source",
]

# Avalanche's own tensor dataset (tensors_benchmark, ...): a TensorDataset whose second
# tensor comes out as Python scalars. Private: if a version drops it, such datasets simply
# take the slow path (they are not ours).
_SCALAR_TARGETS = getattr(_classification, "_TensorClassificationDataset", None)


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


class AvalancheInternalsError(RuntimeError):
    """The Avalanche dataset internals the fast tensor path reads are not there."""


def _internal(owner, name: str):
    try:
        return getattr(owner, name)
    except AttributeError:
        raise AvalancheInternalsError(
            f"strategies.datasets.tensor_source: with Avalanche {avalanche.__version__}, "
            f"{type(owner).__name__} has no attribute {name!r}. The fast tensor path reads "
            "Avalanche 0.6.0's dataset internals (AvalancheDataset._flat_data and "
            "_data_attributes; the flat data's _datasets, _indices, _transform_groups and "
            "_frozen_transform_groups); update strategies/datasets.py for this Avalanche "
            "version or install avalanche-lib 0.6.0."
        ) from None


def tensor_source(dataset) -> tuple[Tensor, ...] | None:
    """The minibatch columns a DataLoader over ``dataset`` yields, as whole tensors (one
    row per sample), when ``dataset`` is an Avalanche dataset over one ``TensorDataset``
    (optionally subset, possibly nested) with no transforms and the default collate: the
    dataset's tensors followed by the data attributes Avalanche appends to each sample
    (``use_in_getitem``, e.g. the task labels of an ``(x, y, t)`` dataset). For
    :func:`tagged_dataset` datasets that is ``(x, y, difficulty, task)``.

    None for datasets that are not plain tensors (transforms, concatenations such as
    replay buffers, custom collate functions, other dataset classes): use Avalanche's
    loaders. Raises :class:`AvalancheInternalsError` when an Avalanche dataset lacks the
    internals this reads (see the module docstring).
    """
    if not isinstance(dataset, AvalancheDataset):
        return None
    flat = _internal(dataset, "_flat_data")
    attributes = _internal(dataset, "_data_attributes")
    if _internal(dataset, "collate_fn") is not default_collate:
        return None
    leaf, indices = _single_source(flat)
    columns = _leaf_columns(leaf)
    if columns is None:
        return None
    if indices is not None:
        columns = [column[indices] for column in columns]
    for attribute in attributes.values():
        if _internal(attribute, "use_in_getitem"):
            column = _attribute_column(attribute)
            if column is None:
                return None
            columns.append(column)
    return tuple(columns)


def _single_source(flat):
    """The one dataset under Avalanche's flat data (through nested levels, which Avalanche
    keeps apart when they carry transform groups) and the composed indices into it; (None,
    None) when a level concatenates datasets or applies a transform."""
    level, indices = flat, None
    while True:
        datasets = _internal(level, "_datasets")
        if len(datasets) != 1:
            return None, None
        for name in ("_frozen_transform_groups", "_transform_groups"):
            groups = _internal(level, name)
            if groups is not None and not _no_transforms(_internal(groups, "transform_groups")):
                return None, None
        chosen = _internal(level, "_indices")
        if chosen is not None:
            chosen = torch.as_tensor(list(chosen), dtype=torch.long)
            indices = chosen if indices is None else chosen[indices]
        child = datasets[0]
        if not isinstance(child, type(flat)):
            return child, indices
        level = child


def _no_transforms(groups: dict) -> bool:
    for transform in groups.values():
        if transform is None:
            continue
        if not isinstance(transform, TupleTransform):
            return False
        if any(part is not None for part in _internal(transform, "transforms")):
            return False
    return True


def _leaf_columns(leaf) -> list[Tensor] | None:
    """The leaf's tensors as a DataLoader would collate its samples, or None."""
    if type(leaf) is TensorDataset:
        return list(leaf.tensors)
    if _SCALAR_TARGETS is not None and type(leaf) is _SCALAR_TARGETS:
        tensors = list(leaf.tensors)
        if len(tensors) < 2 or tensors[1].dim() != 1:
            return None
        tensors[1] = default_collate(tensors[1].tolist())  # what item() then collate give
        return tensors
    return None


def _attribute_column(attribute) -> Tensor | None:
    """A data attribute's values collated into one tensor, or None if they do not."""
    try:
        column = default_collate(list(attribute))
    except (TypeError, RuntimeError, IndexError):
        return None
    return column if isinstance(column, Tensor) else None


class TensorBatches:
    """Minibatches sliced straight from tensors: what a DataLoader over a TensorDataset
    yields, without a Python call per sample. Shuffling draws from torch's global RNG;
    ``drop_last`` drops a last, smaller batch."""

    def __init__(
        self, tensors: tuple[Tensor, ...], batch_size: int, shuffle: bool, drop_last: bool = False
    ):
        self.tensors, self.batch_size, self.shuffle = tensors, batch_size, shuffle
        self.drop_last = drop_last

    def __len__(self) -> int:
        count = len(self.tensors[0])
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self):
        count = len(self.tensors[0])
        order = torch.randperm(count) if self.shuffle else None
        for first in range(0, len(self) * self.batch_size, self.batch_size):
            if order is None:
                yield tuple(t[first : first + self.batch_size] for t in self.tensors)
            else:
                chosen = order[first : first + self.batch_size]
                # index_select, not t[chosen]: half the time per shuffled (64, 784) batch here
                yield tuple(t.index_select(0, chosen) for t in self.tensors)
