"""IDX reading and writing, and the Fashion-MNIST loader on tiny generated files (the real
dataset is not needed)."""

import gzip
import struct

import numpy as np
import pytest
import torch

from ponderlife.tasks.idx import (
    FASHION_MNIST_ENV,
    FASHION_MNIST_FILES,
    load_fashion_mnist,
    permuted,
    read_idx,
    write_idx,
)


def tiny_fashion(folder, split="train", count=5, gz=True, seed=0):
    """Write a tiny Fashion-MNIST split into ``folder``; return its images and labels."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = generator.integers(0, 10, count, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(FASHION_MNIST_FILES[split], (images, labels), strict=True):
        write_idx(folder / (name if gz else name.removesuffix(".gz")), array)
    return images, labels


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_uint8_images_round_trip_plain_and_gzip(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / name, images)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and back.shape == (5, 28, 28)
    assert np.array_equal(back, images)
    raw = (tmp_path / name).read_bytes()
    assert raw.startswith(b"\x1f\x8b") == name.endswith(".gz")


def test_header_is_the_standard_big_endian_layout(tmp_path):
    labels = np.array([1, 2, 3], dtype=np.uint8)
    write_idx(tmp_path / "labels", labels)
    assert (tmp_path / "labels").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])
    values = np.array([[1, -2]], dtype=np.int32)
    write_idx(tmp_path / "ints", values)
    expected = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 1, 2) + struct.pack(">2i", 1, -2)
    assert (tmp_path / "ints").read_bytes() == expected


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_other_types_round_trip(tmp_path, dtype):
    values = (np.random.default_rng(1).standard_normal((3, 4, 2)) * 100).astype(dtype)
    write_idx(tmp_path / "values.gz", values)
    back = read_idx(tmp_path / "values.gz")
    assert back.dtype == dtype and np.array_equal(back, values)
    # Big-endian input arrays are written the same way.
    write_idx(tmp_path / "swapped", values.astype(values.dtype.newbyteorder(">")))
    assert np.array_equal(read_idx(tmp_path / "swapped"), values)


def test_bad_magic_truncated_and_trailing_bytes_raise(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(bytes([0, 1, 8, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(ValueError, match=r"bad\.idx.*magic number"):
        read_idx(bad)
    bad.write_bytes(bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7]))  # 0x0A is no type code
    with pytest.raises(ValueError, match="magic number"):
        read_idx(bad)
    write_idx(tmp_path / "full.idx", np.arange(12, dtype=np.int16).reshape(3, 4))
    raw = (tmp_path / "full.idx").read_bytes()
    short = tmp_path / "short.idx"
    short.write_bytes(raw[:-1])
    with pytest.raises(ValueError, match=r"short\.idx.*truncated IDX data.*24 bytes"):
        read_idx(short)
    short.write_bytes(raw[:6])
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(short)
    short.write_bytes(raw[:2])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)
    long = tmp_path / "long.idx"
    long.write_bytes(raw + b"\0")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(long)
    cut = tmp_path / "cut.idx.gz"
    cut.write_bytes(gzip.compress(raw)[:-6])
    with pytest.raises(ValueError, match=r"cut\.idx\.gz.*gzip"):
        read_idx(cut)


def test_unsupported_dtype_is_refused(tmp_path):
    with pytest.raises(ValueError, match="array dtype must be one of"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_from_a_folder(tmp_path, gz):
    images, labels = tiny_fashion(tmp_path, "test", count=5, gz=gz)
    data = load_fashion_mnist("test", root=tmp_path)
    assert data.images.shape == (5, 28 * 28) and data.images.dtype == torch.float32
    assert data.labels.dtype == torch.int64
    assert torch.equal(data.labels, torch.from_numpy(labels.astype(np.int64)))
    expected = torch.from_numpy(images.reshape(5, -1).astype(np.float32) / 255)
    assert torch.equal(data.images, expected)
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0


def test_environment_variable_sets_the_default_root(tmp_path, monkeypatch):
    tiny_fashion(tmp_path / "mine", "train", count=3)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "mine"))
    assert load_fashion_mnist().images.shape == (3, 784)


def test_missing_files_explain_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as info:
        load_fashion_mnist("train")
    assert FASHION_MNIST_ENV in str(info.value) and "root=" in str(info.value)
    with pytest.raises(ValueError, match="split must be one of"):
        load_fashion_mnist("validation", root=tmp_path)


def test_image_and_label_counts_must_agree(tmp_path):
    tiny_fashion(tmp_path, "train", count=4)
    write_idx(tmp_path / FASHION_MNIST_FILES["train"][1], np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"4 images but .* 3 labels"):
        load_fashion_mnist("train", root=tmp_path)


def test_permutation_is_seeded_and_moves_pixels_consistently():
    images = torch.arange(3 * 784, dtype=torch.float32).reshape(3, 784)
    first, again, other = permuted(images, 1), permuted(images, 1), permuted(images, 2)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(permuted(images, 0), images)  # seed 0 is a permutation too
    # The same pixel permutation for every image, and nothing lost.
    order = (first[0] - images[0, 0]).long()
    assert torch.equal(first, images[:, order])
    assert torch.equal(first.sort(dim=1).values, images)
    with pytest.raises(ValueError, match="images must have shape"):
        permuted(images.reshape(3, 28, 28), 0)
    with pytest.raises(ValueError, match="permutation_seed"):
        permuted(images, -1)
    # rows: the same as permuting the selected images, in the order given.
    rows = torch.tensor([2, 0, 2])
    assert torch.equal(permuted(images, 1, rows=rows), permuted(images[rows], 1))
