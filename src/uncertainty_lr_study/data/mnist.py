"""MNIST (LeCun et al. 1998) from the vendored IDX files, or from the Hugging Face hub.

The vendored gzip files are checked against ``SHA256SUMS`` and read with
torchvision's IDX reader (``torchvision.datasets.mnist``).

Splits: the official 60,000 training images are split, with a fixed seed that does
not depend on the run's seed, into 55,000 for training and 5,000 for validation; the
official 10,000 test images are the test set. Images are scaled to [0, 1] and
standardised with the training split's mean and standard deviation
(0.1307 / 0.3081, the usual MNIST values).
"""

from __future__ import annotations

import gzip
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from uncertainty_lr_study.data.checksums import DataFileError, folder_problems, verify_folder
from uncertainty_lr_study.paths import raw_data_dir

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
MEAN, STD = 0.1307, 0.3081
NUM_CLASSES = 10
VALIDATION_SIZE = 5_000
SPLIT_SEED = 20_240_601  # fixed: the validation split is the same for every run
HOW_TO_GET = (
    "Restore the vendored copy with `git checkout data/raw/mnist`, or download the "
    "original from a mirror of yann.lecun.com/exdb/mnist and check it against "
    "data/raw/mnist/SHA256SUMS."
)
TRAIN_SIZE = 60_000 - VALIDATION_SIZE
"""Training images after the default validation split."""


@dataclass
class MnistSplits:
    """MNIST tensors, ready for a model.

    Attributes:
        x_train: float32 ``(55000, 1, 28, 28)``, standardised.
        y_train: int64 ``(55000,)``.
        x_val, y_val: the 5,000 held-out training images, same layout.
        x_test, y_test: the official 10,000 test images, same layout.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    num_classes: int = NUM_CLASSES


SHAPES = {
    "train_images": (60_000, 28, 28),
    "train_labels": (60_000,),
    "test_images": (10_000, 28, 28),
    "test_labels": (10_000,),
}
"""Array shape of each official IDX file (images and labels of a split agree in length)."""


def read_idx(path: Path, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Read a gzip-compressed IDX file (the MNIST format) of unsigned bytes with
    torchvision's reader (``torchvision.datasets.mnist.read_sn3_pascalvincent_tensor``,
    strict: the payload must match the declared shape).

    The file is decompressed into a temporary file first (torchvision reads plain IDX
    files); the vendored ``.gz`` files stay as they are.

    Args:
        path: the ``.gz`` file.
        shape: the dimensions the header must declare (None: any).

    Returns:
        uint8 tensor of the declared shape.

    Raises:
        DataFileError: naming the file, if it is missing, not readable gzip (truncated,
            corrupt stream), not an unsigned-byte IDX file (magic number), declares
            another ``shape``, or its payload does not match the shape it declares.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"data file {path} is missing. {HOW_TO_GET}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # truncated or corrupt gzip stream
        raise DataFileError(
            f"data file {path} is not a readable gzip file ({type(err).__name__}: {err}). "
            f"{HOW_TO_GET}"
        ) from err
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 3:
        raise DataFileError(
            f"{path} is not an unsigned-byte IDX file (bad magic number). {HOW_TO_GET}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / path.stem
        plain.write_bytes(raw)
        try:
            array = read_sn3_pascalvincent_tensor(str(plain), strict=True)
        except (AssertionError, RuntimeError, ValueError) as err:
            raise DataFileError(f"{path}: {_payload_problem(raw)}. {HOW_TO_GET}") from err
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise DataFileError(
            f"{path}: header declares shape {tuple(array.shape)}, expected {tuple(shape)}. "
            f"{HOW_TO_GET}"
        )
    return array


def _payload_problem(raw: bytes) -> str:
    """What is wrong with an IDX file that torchvision's reader refused (for the message)."""
    ndim = raw[3]
    header = 4 * (ndim + 1)
    if len(raw) < header:
        return "the IDX header is cut short"
    dims = tuple(int.from_bytes(raw[4 * i + 4 : 4 * i + 8], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    found = len(raw) - header
    return (
        f"header declares shape {dims} ({expected} bytes), payload has "
        f"{found if found < expected else 'more'} bytes"
    )


def read_mnist_file(folder: Path, key: str) -> torch.Tensor:
    """Read and check one of the four official files (``key`` of :data:`FILES`).

    Checks the gzip stream, the IDX header (magic number and :data:`SHAPES`), the
    payload length and, for labels, that every label lies in 0..9.

    Raises:
        DataFileError: naming the file, what is wrong and how to restore it.
    """
    path = Path(folder) / FILES[key]
    array = read_idx(path, SHAPES[key])
    if key.endswith("labels") and array.numel() and int(array.max()) >= NUM_CLASSES:
        row = int(torch.argmax((array >= NUM_CLASSES).to(torch.uint8)))
        raise DataFileError(
            f"{path}: label {int(array[row])} at row {row}, expected 0..{NUM_CLASSES - 1}. "
            f"{HOW_TO_GET}"
        )
    return array


def check_mnist_files(root: str | Path | None = None) -> list[str]:
    """Every problem of the vendored files: checksums, then each file's content
    (:func:`read_mnist_file`; about 0.3 s for the four files).

    Args:
        root: the folder (default ``data/raw/mnist``).

    Returns:
        One message per bad file, naming it and the fix; empty when all are good.
    """
    folder = Path(root) if root is not None else raw_data_dir() / "mnist"
    keys = {name: key for key, name in FILES.items()}
    return folder_problems(
        folder, tuple(FILES.values()), HOW_TO_GET, lambda p: read_mnist_file(folder, keys[p.name])
    )


def _standardise(images: torch.Tensor) -> torch.Tensor:
    x = (images.to(torch.float32) / 255.0).unsqueeze(1)  # uint8 (N, 28, 28) -> (N, 1, 28, 28)
    return (x - MEAN) / STD


def verify_mnist_files(root: str | Path | None = None) -> Path:
    """Check that the four vendored IDX files exist and match ``SHA256SUMS``.

    Returns:
        The folder checked.

    Raises:
        DataFileError: naming the missing or corrupt file, its expected checksum and
            how to restore it.
    """
    folder = Path(root) if root is not None else raw_data_dir() / "mnist"
    return verify_folder(folder, tuple(FILES.values()), HOW_TO_GET)


def load_mnist(
    root: str | Path | None = None,
    source: str = "local",
    validation_size: int = VALIDATION_SIZE,
) -> MnistSplits:
    """Load MNIST as standardised tensors with a fixed train/validation split.

    Args:
        root: folder with the four IDX ``.gz`` files and ``SHA256SUMS``. Default:
            ``data/raw/mnist`` of the repository.
        source: ``"local"`` (the vendored files, checksums verified) or ``"hub"``
            (Hugging Face ``datasets.load_dataset("mnist")``; needs the ``datasets``
            package and network access).
        validation_size: images held out of the 60,000 training images (fixed seed).

    Returns:
        :class:`MnistSplits`.

    Raises:
        DataFileError: a file is missing, corrupt (the message names it, the
            expected checksum and where to get it) or malformed (:func:`read_mnist_file`).
        ValueError: unknown ``source`` or a validation size out of range.
    """
    if source == "local":
        folder = verify_mnist_files(root)
        arrays = {key: read_mnist_file(folder, key) for key in FILES}
    elif source == "hub":
        arrays = _load_from_hub()
    else:
        raise ValueError(f"source must be 'local' or 'hub', got {source!r}")
    n_train = len(arrays["train_labels"])
    if not 0 < validation_size < n_train:
        raise ValueError(f"validation_size must lie in (0, {n_train}), got {validation_size}")

    x_all = _standardise(arrays["train_images"])
    y_all = arrays["train_labels"].to(torch.int64)
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_idx, train_idx = perm[:validation_size], perm[validation_size:]
    return MnistSplits(
        x_train=x_all[train_idx].contiguous(),
        y_train=y_all[train_idx].contiguous(),
        x_val=x_all[val_idx].contiguous(),
        y_val=y_all[val_idx].contiguous(),
        x_test=_standardise(arrays["test_images"]),
        y_test=arrays["test_labels"].to(torch.int64),
    )


def _load_from_hub() -> dict[str, torch.Tensor]:
    try:
        import datasets  # noqa: PLC0415 (optional dependency)
    except ImportError as err:
        raise ImportError(
            "source='hub' needs the `datasets` package: pip install datasets"
        ) from err
    ds = datasets.load_dataset("mnist")
    out = {}
    for split, prefix in (("train", "train"), ("test", "test")):
        out[f"{prefix}_images"] = torch.from_numpy(
            np.stack([np.asarray(im, dtype=np.uint8) for im in ds[split]["image"]])
        )
        out[f"{prefix}_labels"] = torch.tensor(ds[split]["label"], dtype=torch.uint8)
    return out
