import gzip
import shutil

import numpy as np
import pytest
import torch

from uncertainty_lr_study.data import DataFileError, load_mnist
from uncertainty_lr_study.data.mnist import FILES, MEAN, STD, read_idx
from uncertainty_lr_study.paths import raw_data_dir


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_real_mnist_splits(mnist):
    assert mnist.x_train.shape == (55_000, 1, 28, 28)
    assert mnist.x_val.shape == (5_000, 1, 28, 28)
    assert mnist.x_test.shape == (10_000, 1, 28, 28)
    assert mnist.x_train.dtype == torch.float32 and mnist.y_train.dtype == torch.int64
    # every class is present in every split, in about its share
    for y in (mnist.y_train, mnist.y_val, mnist.y_test):
        counts = torch.bincount(y, minlength=10).float() / len(y)
        assert counts.min() > 0.08 and counts.max() < 0.12
    # standardised with the usual MNIST statistics
    assert float(mnist.x_train.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(mnist.x_train.std()) == pytest.approx(1.0, abs=0.01)
    assert float(mnist.x_test.min()) == pytest.approx(-MEAN / STD, rel=1e-5)
    # the known test-label counts of the official file
    assert torch.bincount(mnist.y_test).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_validation_split_is_fixed_and_disjoint(mnist):
    again = load_mnist()
    assert torch.equal(again.x_val, mnist.x_val) and torch.equal(again.y_train, mnist.y_train)
    train_rows = {row.numpy().tobytes() for row in mnist.x_train[:2000].flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in mnist.x_val.flatten(1))


def copy_mnist(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(raw_data_dir() / "mnist", folder)
    return folder


def test_corrupt_file_is_named(tmp_path):
    folder = copy_mnist(tmp_path)
    path = folder / FILES["train_labels"]
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataFileError, match=r"train-labels-idx1-ubyte.gz is corrupt: sha256 .* expected 1787548b"
    ):
        load_mnist(folder)


def test_missing_file_is_named(tmp_path):
    folder = copy_mnist(tmp_path)
    (folder / FILES["test_images"]).unlink()
    with pytest.raises(
        DataFileError, match="t10k-images-idx3-ubyte.gz is missing. Restore the vendored copy"
    ):
        load_mnist(folder)


def test_read_idx_rejects_bad_header_and_truncated_payload(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataFileError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataFileError, match="payload has 3 bytes"):
        read_idx(short)
    good = tmp_path / "good.gz"
    with gzip.open(good, "wb") as f:
        f.write(
            b"\x00\x00\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))
        )
    assert np.array_equal(read_idx(good), np.arange(6, dtype=np.uint8).reshape(2, 3))


def test_bad_arguments():
    with pytest.raises(ValueError, match="source"):
        load_mnist(source="ftp")
    with pytest.raises(ValueError, match="validation_size"):
        load_mnist(validation_size=0)
