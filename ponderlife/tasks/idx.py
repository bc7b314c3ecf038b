"""The IDX file format (MNIST, Fashion-MNIST) and an offline Fashion-MNIST loader.

An IDX file is a header then the data, everything big-endian:

* magic number: two zero bytes, a type code byte (0x08 uint8, 0x09 int8, 0x0B int16,
  0x0C int32, 0x0D float32, 0x0E float64), then the number of dimensions d;
* d dimension sizes, each a 4-byte big-endian integer;
* the data, row-major (C order), as big-endian values of the type.

Files may be gzip-compressed (recognised by their content, whatever their name).

Fashion-MNIST is read from local files only; nothing is downloaded. On Debian and Ubuntu,
``apt-get install dataset-fashion-mnist`` (as root) puts the standard gzipped IDX files in
:data:`FASHION_MNIST_DIR`; any folder holding the same four files (gzipped or not) works
too, through ``root=`` or the ``PONDERLIFE_FASHION_MNIST`` environment variable.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ponderlife._checks import check_choice, check_int

_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_NAME_TO_CODE: dict[str, int] = {dtype.name: code for code, dtype in _CODE_TO_DTYPE.items()}
_GZIP_MAGIC = b"\x1f\x8b"

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "PONDERLIFE_FASHION_MNIST"
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({error})") from error


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into an array in native byte order.

    The array has the file's dimensions and the dtype of its type code (uint8, int8,
    int16, int32, float32, float64). Raises ``ValueError`` naming the file when the magic
    number is wrong, the header or data is truncated, or bytes follow the data.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file: expected a 4-byte magic number")
    zero1, zero2, code, ndim = raw[:4]
    if zero1 or zero2 or code not in _CODE_TO_DTYPE:
        codes = ", ".join(f"0x{c:02X}" for c in _CODE_TO_DTYPE)
        raise ValueError(
            f"{path}: not an IDX file: expected a magic number 00 00 <type> <ndim> with type "
            f"in {codes}, got {raw[:4].hex(' ')}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated IDX header: expected {ndim} dimension sizes "
            f"({header} bytes), got {len(raw)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _CODE_TO_DTYPE[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        problem = "truncated IDX data" if actual < expected else "trailing bytes after IDX data"
        raise ValueError(
            f"{path}: {problem}: expected {expected} bytes for shape {shape} of "
            f"{dtype.name}, got {actual}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header, count=expected // dtype.itemsize)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends with ``.gz``.

    ``array`` must have one of the IDX dtypes (uint8, int8, int16, int32, float32,
    float64; any byte order) and at most 255 dimensions.
    """
    array = np.asarray(array)
    name = array.dtype.newbyteorder("=").name if array.dtype.kind in "iuf" else ""
    if name not in _NAME_TO_CODE:
        allowed = ", ".join(_NAME_TO_CODE)
        raise ValueError(f"array dtype must be one of {allowed}, got {array.dtype}")
    if array.ndim > 255:
        raise ValueError(f"array must have at most 255 dimensions, got {array.ndim}")
    if any(size >= 2**32 for size in array.shape):
        raise ValueError(f"array dimensions must be < 2**32, got {array.shape}")
    code = _NAME_TO_CODE[name]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()
    path = Path(path)
    if path.name.endswith(".gz"):
        # mtime=0 makes the output depend on the array only.
        path.write_bytes(gzip.compress(header + data, mtime=0))
    else:
        path.write_bytes(header + data)


class ImageSet(NamedTuple):
    images: Tensor  # float32 (N, H*W) in [0, 1]; (N, 28*28) for Fashion-MNIST
    labels: Tensor  # int64 (N,)


def _find(root: Path, name: str) -> Path | None:
    for candidate in (name, name.removesuffix(".gz")):
        if (root / candidate).is_file():
            return root / candidate
    return None


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> ImageSet:
    """Load the Fashion-MNIST ``split`` ("train": 60,000 images, "test": 10,000).

    ``root`` is a folder with the four standard IDX files (names as in
    :data:`FASHION_MNIST_FILES`, with or without ``.gz``); by default the folder named by
    the ``PONDERLIFE_FASHION_MNIST`` environment variable if set, else
    :data:`FASHION_MNIST_DIR`. Images (N, H, W) uint8 are flattened to (N, H·W) and scaled
    to [0, 1]. Raises ``FileNotFoundError`` with install instructions when a file is
    missing, and ``ValueError`` when the files do not hold N images and N labels.
    """
    check_choice("split", split, tuple(FASHION_MNIST_FILES))
    if root is None:
        root = os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR
    root = Path(root)
    paths = []
    for name in FASHION_MNIST_FILES[split]:
        found = _find(root, name)
        if found is None:
            raise FileNotFoundError(
                f"Fashion-MNIST file {name} (or {name.removesuffix('.gz')}) not found in "
                f"{root}. Install the Debian/Ubuntu package with `apt-get install "
                f"dataset-fashion-mnist` (as root; files go to {FASHION_MNIST_DIR}), or pass "
                f"root=<your folder of IDX files>, or set {FASHION_MNIST_ENV}=<that folder>."
            )
        paths.append(found)
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{paths[0]}: expected uint8 images of shape (N, H, W), got "
            f"{images.dtype} {images.shape}"
        )
    if labels.ndim != 1:
        raise ValueError(f"{paths[1]}: expected labels of shape (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(
            f"{paths[0]} holds {len(images)} images but {paths[1]} holds {len(labels)} labels"
        )
    flat = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return ImageSet(flat, torch.from_numpy(labels.astype(np.int64)))


def permutation(size: int, permutation_seed: int) -> Tensor:
    """The pixel order of :func:`permuted`: ``torch.randperm(size)`` from a generator
    seeded with ``permutation_seed``."""
    check_int("permutation_seed", permutation_seed, 0, 2**64 - 1)
    return torch.randperm(size, generator=torch.Generator().manual_seed(permutation_seed))


def permuted(images: Tensor, permutation_seed: int, rows: Tensor | None = None) -> Tensor:
    """``images`` (N, D) with their D pixels permuted, for Permuted-MNIST-style streams.

    The permutation is ``torch.randperm(D)`` from a generator seeded with
    ``permutation_seed`` (:func:`permutation`): the same seed always gives the same
    permutation and every seed, 0 included, gives a random one (use the images themselves
    for an unpermuted task). ``rows`` (int64) permutes only those images, in that order,
    in one gather: ``permuted(images[rows], seed)`` without the intermediate copy.
    """
    if images.ndim != 2:
        raise ValueError(f"images must have shape (N, D), got {tuple(images.shape)}")
    order = permutation(images.shape[1], permutation_seed).to(images.device)
    if rows is None:
        return images[:, order]
    return images[rows.to(images.device).unsqueeze(1), order]
