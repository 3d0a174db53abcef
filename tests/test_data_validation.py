"""Hostile or broken data files: each fault is injected into a copy of the real
vendored file and the folder's SHA256SUMS regenerated to match, so the checksum
passes and the content checks must catch it. Each must raise the project's
DataFileError naming the file, both in the loader and in ``check_data_content``
(the cheap check the preflight runs before any job)."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uncertainty_lr_study.data import DataFileError, load_mnist
from uncertainty_lr_study.data.checksums import sha256
from uncertainty_lr_study.data.imdb import load_imdb_reviews
from uncertainty_lr_study.data.mnist import FILES as MNIST_FILES
from uncertainty_lr_study.paths import raw_data_dir


def copy_of(tmp_path: Path, dataset: str) -> Path:
    folder = tmp_path / dataset
    shutil.copytree(raw_data_dir() / dataset, folder)
    return folder


def reseal(folder: Path) -> None:
    """Regenerate SHA256SUMS so that it matches the (corrupted) files."""
    lines = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        name = line.split()[1]
        lines.append(f"{sha256(folder / name)}  {name}")
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def assert_refused(load, dataset: str, folder: Path, name: str, why: str) -> None:
    """The loader and the preflight check both refuse the file, naming it, the
    problem and the fix."""
    with pytest.raises(DataFileError, match=re.escape(str(folder / name)) + ".*" + why) as err:
        load(folder)
    assert "git checkout" in str(err.value)
    from uncertainty_lr_study.data import check_data_content  # for the preflight (imported late)

    problems = check_data_content(dataset, folder)
    assert len(problems) == 1, problems
    assert str(folder / name) in problems[0] and re.search(why, problems[0])
    assert "git checkout" in problems[0]


# ------------------------------------------------------------------------ MNIST


@pytest.mark.parametrize(
    "fault, why",
    [
        ("truncated", "not a readable gzip file .EOFError"),
        ("flipped", "not a readable gzip file"),  # zlib.error or a CRC mismatch
    ],
    ids=["truncated", "flipped"],
)
def test_broken_mnist_gzip_stream(tmp_path, fault, why):
    folder = copy_of(tmp_path, "mnist")
    path = folder / MNIST_FILES["train_labels"]
    blob = path.read_bytes()
    if fault == "truncated":
        blob = blob[: len(blob) // 2]
    else:
        blob = blob[:5000] + bytes(b ^ 0xFF for b in blob[5000:5100]) + blob[5100:]
    path.write_bytes(blob)
    reseal(folder)
    assert_refused(load_mnist, "mnist", folder, path.name, why)


def rewrite_idx(path: Path, edit) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    path.write_bytes(gzip.compress(bytes(edit(raw)), compresslevel=1))


def test_mnist_label_out_of_range(tmp_path):
    folder = copy_of(tmp_path, "mnist")
    path = folder / MNIST_FILES["train_labels"]

    def label_10_at_row_7(raw):
        raw[8 + 7] = 10
        return raw

    rewrite_idx(path, label_10_at_row_7)
    reseal(folder)
    assert_refused(load_mnist, "mnist", folder, path.name, r"label 10 at row 7, expected 0\.\.9")


def test_mnist_labels_fewer_than_images(tmp_path):
    folder = copy_of(tmp_path, "mnist")
    path = folder / MNIST_FILES["test_labels"]

    def drop_last_label(raw):
        return raw[:4] + (9_999).to_bytes(4, "big") + raw[8:-1]

    rewrite_idx(path, drop_last_label)
    reseal(folder)
    assert_refused(
        load_mnist, "mnist", folder, path.name, r"declares shape \(9999,\), expected \(10000,\)"
    )


def test_mnist_bad_magic_number(tmp_path):
    folder = copy_of(tmp_path, "mnist")
    path = folder / MNIST_FILES["test_images"]

    def int32_type_code(raw):
        raw[2] = 0x0C
        return raw

    rewrite_idx(path, int32_type_code)
    reseal(folder)
    assert_refused(load_mnist, "mnist", folder, path.name, "bad magic number")


# -------------------------------------------------------------------- SHA256SUMS


@pytest.mark.parametrize(
    "line, why",
    [
        ("b91679a0acfe4ba0e50a2437a903084c", "line 2 is malformed: expected"),  # one field
        ("z" * 64 + "  t10k-labels-idx1-ubyte.gz", "line 2 is malformed: digest 'zzz"),
        ("b91679a0" * 7 + "  t10k-labels-idx1-ubyte.gz", "line 2 is malformed: digest .* 64 hex"),
    ],
    ids=["one-field", "not-hex", "too-short"],
)
def test_malformed_sha256sums_line_is_named(tmp_path, line, why):
    folder = copy_of(tmp_path, "mnist")
    sums = folder / "SHA256SUMS"
    lines = sums.read_text().splitlines()
    assert "t10k-labels" in lines[1]
    lines[1] = line
    sums.write_text("\n".join(lines) + "\n")
    assert_refused(load_mnist, "mnist", folder, "SHA256SUMS", why)


def test_binary_sha256sums_is_refused(tmp_path):
    folder = copy_of(tmp_path, "mnist")
    gzip_bytes = (folder / MNIST_FILES["test_labels"]).read_bytes()[:200]
    (folder / "SHA256SUMS").write_bytes(gzip_bytes)  # a file copied over the wrong name
    assert_refused(load_mnist, "mnist", folder, "SHA256SUMS", "not UTF-8 text")


# ------------------------------------------------------------------------- IMDB


def rewrite_labels(path: Path, labels: pa.Array) -> None:
    table = pq.read_table(path)
    table = table.set_column(table.column_names.index("label"), "label", labels)
    pq.write_table(table, path)


@pytest.mark.parametrize(
    "fault, why",
    [
        ("float 0.9", r"label 0\.9 at row 3 \(1 such in all\); expected 0 or 1"),
        ("int 2", r"label 2 at row 3"),
        ("string", r"label column of type string, expected integers"),
        ("missing", r"1 review\(s\) without a label"),
    ],
    ids=["float-0.9", "int-2", "string", "missing"],
)
def test_bad_imdb_labels(tmp_path, fault, why):
    folder = copy_of(tmp_path, "imdb")
    path = folder / "train.parquet"
    labels = pq.read_table(path, columns=["label"])["label"].to_numpy()
    if fault == "float 0.9":  # cast to int it would silently become 0
        values = labels.astype(np.float64)
        values[3] = 0.9
        column = pa.array(values)
    elif fault == "int 2":
        values = labels.copy()
        values[3] = 2
        column = pa.array(values)
    elif fault == "string":
        column = pa.array([str(v) for v in labels])
    else:
        column = pa.array([None if i == 3 else int(v) for i, v in enumerate(labels)], pa.int64())
    rewrite_labels(path, column)
    reseal(folder)
    assert_refused(load_imdb_reviews, "imdb", folder, path.name, why)


def test_integral_float_imdb_labels_are_accepted(tmp_path):
    folder = copy_of(tmp_path, "imdb")
    path = folder / "test.parquet"
    labels = pq.read_table(path, columns=["label"])["label"].to_numpy()
    rewrite_labels(path, pa.array(labels.astype(np.float32)))
    reseal(folder)
    from uncertainty_lr_study.data import check_data_content

    assert check_data_content("imdb", folder) == []
    assert np.array_equal(load_imdb_reviews(folder).test_label, load_imdb_reviews().test_label)


def test_imdb_text_that_is_not_text(tmp_path):
    folder = copy_of(tmp_path, "imdb")
    path = folder / "test.parquet"
    table = pq.read_table(path)
    texts = [t.encode() for t in table["text"].to_pylist()]
    texts[5] = texts[5][:20] + b"\xff\xfe" + texts[5][20:]  # not UTF-8
    table = table.set_column(table.column_names.index("text"), "text", pa.array(texts, pa.binary()))
    pq.write_table(table, path)
    reseal(folder)
    assert_refused(load_imdb_reviews, "imdb", folder, path.name, "text column of type binary")


# ------------------------------------------------------------------------ SQuAD


def load_squad_at(folder):
    from uncertainty_lr_study.data.squad import load_squad

    return load_squad(root=folder)


def rewrite_json(path: Path, edit) -> None:
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(edit(raw), compresslevel=1))


def at(raw: bytes) -> int:
    """Byte offset inside the first context string of a SQuAD document."""
    return raw.index(b'"context": "') + len(b'"context": "') + 10


@pytest.mark.parametrize(
    "fault, why",
    [
        ("latin-1 byte", "cannot be read as JSON .UnicodeDecodeError"),
        ("cut JSON", "cannot be read as JSON .JSONDecodeError"),
        ("deep nesting", "cannot be read as JSON .RecursionError"),
        ("flipped gzip", "cannot be read as JSON"),
        ("answer_start string", "answer_start '.*' is not an integer"),
        ("title number", r"data\[0\]: expected an object with a .title. string"),
    ],
    ids=["latin1-byte", "cut-json", "deep-nesting", "flipped-gzip", "answer-start-string",
         "title-number"],
)
def test_broken_squad_file(tmp_path, fault, why):
    folder = copy_of(tmp_path, "squad")
    path = folder / "dev-v1.1.json.gz"
    if fault == "latin-1 byte":
        rewrite_json(path, lambda raw: raw[: at(raw)] + b"\xe9" + raw[at(raw) :])
    elif fault == "cut JSON":
        rewrite_json(path, lambda raw: raw[: len(raw) // 2])
    elif fault == "deep nesting":  # hostile: would blow Python's recursion limit
        nested = b"[" * 100_000 + b"]" * 100_000
        rewrite_json(path, lambda raw: b'{"x": ' + nested + b", " + raw[1:])
    elif fault == "flipped gzip":
        blob = path.read_bytes()
        path.write_bytes(blob[:5000] + bytes(b ^ 0xFF for b in blob[5000:5100]) + blob[5100:])
    else:
        doc = json.loads(gzip.decompress(path.read_bytes()))
        if fault == "answer_start string":
            answer = doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]
            answer["answer_start"] = str(answer["answer_start"])
        else:
            doc["data"][0]["title"] = 17
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb") as f:
            f.write(json.dumps(doc).encode())
        path.write_bytes(buf.getvalue())
    reseal(folder)
    assert_refused(load_squad_at, "squad", folder, path.name, why)


# --------------------------------------------------------------- preflight check


@pytest.mark.parametrize("dataset", ["mnist", "imdb", "squad"])
def test_vendored_files_pass_the_content_checks(dataset):
    from uncertainty_lr_study.data import check_data_content

    assert check_data_content(dataset) == []


def test_every_bad_file_is_listed_and_unknown_datasets_refused(tmp_path):
    from uncertainty_lr_study.data import check_data_content

    folder = copy_of(tmp_path, "mnist")
    (folder / MNIST_FILES["test_images"]).unlink()
    labels = folder / MNIST_FILES["train_labels"]
    labels.write_bytes(labels.read_bytes()[:1000])
    problems = check_data_content("mnist", folder)
    assert len(problems) == 2
    assert "train-labels-idx1-ubyte.gz is corrupt" in problems[0]
    assert "t10k-images-idx3-ubyte.gz is missing" in problems[1]
    with pytest.raises(ValueError, match="dataset must be one of"):
        check_data_content("cifar", folder)
