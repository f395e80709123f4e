"""Data: the UCI handwritten digits bundled with the package (the default, no network
needed; ``digits.npz``, see ``load_digits``) and MNIST from the four standard IDX files, with
an optional download.

Both give a ``Dataset`` of float32 images scaled to [0, 1], flattened to ``(N, D)``, and
int32 labels. Every file problem raises ``DataError`` naming the file.
"""

from __future__ import annotations

import gzip
import http.client
import math
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np

MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or inconsistent."""


class Dataset(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    image_shape: tuple[int, int]  # (rows, cols) of one image before flattening
    x_val: np.ndarray | None = None  # held out from the training data by ``split_validation``
    y_val: np.ndarray | None = None


def split_validation(dataset: Dataset, fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Hold out ``fraction`` of the training data as a validation split (stratified, seeded),
    as the book's ``hyperparameter_optimization.py`` does with 20 %: choices are made on the
    validation accuracy and the test set is only reported. ``fraction=0`` keeps every
    training sample for training and no validation split."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"split_validation: fraction must be in [0, 1), got {fraction!r}")
    if fraction == 0:
        return dataset._replace(x_val=None, y_val=None)
    n = len(dataset.x_train)
    if n == 0 or len(dataset.y_train) != n:
        raise DataError(f"split_validation: the dataset holds {n} training images and {len(dataset.y_train)} labels; "
                        f"it needs at least one of each, as many labels as images")
    held = int(round(fraction * n))
    labels, counts = np.unique(dataset.y_train, return_counts=True)
    classes = len(labels)
    if counts.min() < 2:
        rare = labels[counts.argmin()]
        raise DataError(f"class {rare} has only {counts.min()} training sample; a stratified validation split needs at "
                        f"least 2 samples of each class (a validation fraction of 0 keeps them all for training)")
    if held < classes or n - held < classes:
        raise DataError(f"a validation fraction of {fraction} of {n} training samples leaves {held} for validation "
                        f"and {n - held} for training; each needs at least one sample of each of {classes} classes")
    keep, held_out = stratified_split(dataset.y_train, held, seed)
    return dataset._replace(x_train=dataset.x_train[keep], y_train=dataset.y_train[keep],
                            x_val=dataset.x_train[held_out], y_val=dataset.y_train[held_out])


def stratified_split(labels: np.ndarray, held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(kept, held_out)`` that hold out exactly ``held`` samples with each class in
    (nearly) its share of ``labels``, both in random order, seeded.

    Class ``c`` with ``n_c`` of the ``n`` samples gets ``floor(held * n_c / n)`` held-out places;
    the places left over go to the classes with the largest remainders (ties to the larger
    class, then the smaller label), so the count is exact and each class is off its share by
    less than one sample. Within each class the samples held out are a uniform random subset.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if isinstance(held, bool) or not isinstance(held, (int, np.integer)) or not 0 <= held <= n:
        raise ValueError(f"stratified_split: cannot hold out {held!r} of {n} samples")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = held * counts // n
    remainders = held * counts - quotas * n
    order = np.lexsort((classes, -counts, -remainders))  # largest remainder first
    quotas[order[: held - int(quotas.sum())]] += 1
    kept, held_out = [], []
    for c, quota in zip(classes, quotas):
        members = rng.permutation(np.flatnonzero(labels == c))
        held_out.append(members[:quota])
        kept.append(members[quota:])
    return rng.permutation(np.concatenate(kept)), rng.permutation(np.concatenate(held_out))


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The 1797 8x8 digit images bundled with this package, pixels scaled from 0..16 to [0, 1],
    split into train and test with the same class proportions (``stratified_split``, seeded;
    ``ceil(test_fraction * 1797)`` test images, 360 by default).

    The images are the test set of the UCI "Optical Recognition of Handwritten Digits" data
    (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0), the same 1797 that scikit-learn bundles:
    32x32 bitmaps of 43 writers, counted in 4x4 blocks to integers 0..16. They ship in
    ``pure_backprop/digits.npz`` (45 kB), so loading them reads nothing heavier than NumPy."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"load_digits: test_fraction must be in (0, 1), got {test_fraction!r}")
    with np.load(Path(__file__).with_name("digits.npz")) as bundled:
        images, labels = bundled["images"], bundled["labels"]
    x = (images.reshape(len(images), -1) / np.float32(16.0)).astype(np.float32)
    y = labels.astype(np.int32)
    train, test = stratified_split(y, math.ceil(test_fraction * len(y)), seed)
    return Dataset(x[train], y[train], x[test], y[test], 10, "digits", (8, 8))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or raw, told apart by content, not by name).

    The header is two zero bytes, a type code, the number of dimensions, then each
    dimension as a big-endian uint32; the payload must hold exactly that many entries.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an IDX file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    return _parse_idx(raw, path)


def _parse_idx(raw: bytes, name) -> np.ndarray:
    """The array in the IDX bytes ``raw``; errors name ``name`` (a path or a URL)."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{name}: corrupt gzip data ({e})") from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{name}: not an IDX file (wrong magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX header ({len(raw)} bytes, needs {header} for {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: no overflow for any header
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{name}: {what}: header says shape {_shape_text(shape)}, which needs {expected} bytes, "
                        f"file has {len(raw)}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def _shape_text(shape) -> str:
    if len(shape) <= 6:
        return str(shape)
    return f"({shape[0]}, {shape[1]}, ..., {shape[-1]}) of {len(shape)} dimensions"


def check_mirror(mirror) -> str:
    """``mirror`` if it is an ``http://``, ``https://`` or ``file:`` URL, else ``DataError``."""
    parts = urlsplit(mirror) if isinstance(mirror, str) else None
    if parts is None or parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.netloc):
        raise DataError(f"mirror must be an http(s) or file URL of the folder holding the .gz files, like "
                        f"{MNIST_MIRROR} or file:///path/to/mnist/, got {mirror!r}")
    return mirror


def _find(data_dir: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def missing_mnist_files(data_dir: str | os.PathLike) -> list[str]:
    return [stem for stem in MNIST_FILES.values() if _find(Path(data_dir), stem) is None]


def download_mnist(data_dir: str | os.PathLike, mirror: str = MNIST_MIRROR, timeout: float = 60.0) -> list[Path]:
    """Fetch the missing ``<name>.gz`` files from ``mirror`` into ``data_dir``.

    Each file is written to a temporary name and renamed when complete, so an interrupted
    download never leaves a half file behind under the real name. Returns the new paths.
    Errors name the URL and the file it was meant for, never the temporary file; a
    ``data_dir`` (and parents) created here are removed again when nothing was fetched into it.
    """
    check_mirror(mirror)
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"{data_dir}: is a file, not a folder; give a folder for the MNIST files")
    created = [f for f in (data_dir, *data_dir.parents) if not f.exists()]  # deepest first
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{data_dir}: cannot create the data folder ({_reason(e)})") from None
    fetched = []
    try:
        for stem in missing_mnist_files(data_dir):
            url = mirror.rstrip("/") + "/" + stem + ".gz"
            fetched.append(_download_one(url, data_dir / (stem + ".gz"), timeout))
    finally:
        if not fetched:
            for folder in created:  # leave no empty folder behind
                try:
                    folder.rmdir()
                except OSError:
                    break
    return fetched


def _reason(error) -> str:
    """The innermost message: a URLError's reason, an OSError's strerror, else the error's text."""
    reason = getattr(error, "reason", None) or error
    return str(getattr(reason, "strerror", None) or reason)


def _download_one(url: str, target: Path, timeout: float) -> Path:
    """``url`` into ``target`` through a temporary ``.part`` file, checked as IDX before the rename."""
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    except OSError as e:
        raise DataError(f"{target}: cannot write the download of {url} ({_reason(e)})") from None
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
                raise DataError(f"{url}: download failed ({_reason(e)}); nothing written to {target}") from None
            with response:
                while True:
                    try:
                        chunk = response.read(1 << 20)
                    except (OSError, http.client.HTTPException) as e:
                        raise DataError(f"{url}: download failed ({_reason(e) or type(e).__name__}); "
                                        f"nothing written to {target}") from None
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise DataError(f"{target}: cannot write the download of {url} ({_reason(e)})") from None
        try:
            _parse_idx(Path(tmp).read_bytes(), url)  # refuse to keep a file that does not parse
        except DataError as e:
            raise DataError(f"{url}: downloaded file is not a valid IDX file, not saved as {target}: "
                            f"{str(e).removeprefix(url + ': ')}") from None
        try:
            os.replace(tmp, target)
        except OSError as e:
            raise DataError(f"{target}: cannot write the download of {url} ({_reason(e)})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def load_mnist(data_dir: str | os.PathLike, download: bool = False, mirror: str = MNIST_MIRROR) -> Dataset:
    """MNIST from the four IDX files in ``data_dir`` (``.gz`` or raw); with ``download``,
    missing files are fetched first. Images are scaled to [0, 1] and flattened."""
    data_dir = Path(data_dir)
    if download:
        download_mnist(data_dir, mirror)
    elif data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"{data_dir}: is a file, not a folder; give the folder that holds the four MNIST files")
    elif not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder does not exist (pass --download to fetch MNIST into it)")
    missing = missing_mnist_files(data_dir)
    if missing:
        raise DataError(
            f"{data_dir}: missing MNIST files {', '.join(m + '[.gz]' for m in missing)} "
            f"(pass --download to fetch them)"
        )
    arrays = {key: (read_idx(_find(data_dir, stem)), _find(data_dir, stem)) for key, stem in MNIST_FILES.items()}
    splits = []
    for split in ("train", "test"):
        (images, image_path), (labels, label_path) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"{image_path}: expected uint8 images of shape (N, rows, cols), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DataError(f"{label_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{image_path} holds {images.shape[0]} images but {label_path} holds {labels.shape[0]} labels"
            )
        if images.shape[0] == 0:
            raise DataError(f"{image_path}: holds no images (shape {images.shape}); the {split} split needs at least one")
        if images.shape[1] == 0 or images.shape[2] == 0:
            raise DataError(f"{image_path}: images of {images.shape[1]}x{images.shape[2]} pixels hold no pixels "
                            f"(shape {images.shape})")
        if labels.size and labels.max() > 9:
            raise DataError(f"{label_path}: labels must be digits 0-9, found {int(labels.max())}")
        x = (images.reshape(len(images), -1) / 255.0).astype(np.float32)
        splits.append((x, labels.astype(np.int32), image_path, tuple(images.shape[1:])))
    (x_train, y_train, train_path, train_shape), (x_test, y_test, test_path, test_shape) = splits
    if train_shape != test_shape:
        raise DataError(f"{train_path} and {test_path} have different image sizes ({train_shape} vs {test_shape})")
    return Dataset(x_train, y_train, x_test, y_test, 10, "mnist", train_shape)
