"""``pure_backprop.data`` on its own, no JAX: the validation split's contract (a partition that
keeps each image with its label, its defaults and its limits), the stratified split's rule for
the places left over, the bundled digits' fields, every refusal of the MNIST reader with its
whole message, and the download's streaming, temporary file, URLs, timeouts and clean-up,
through a stand-in for ``urllib`` (the real download runs against a local server in
``tests/test_data_cli.py``)."""

import gzip
import http.client
import io
import os
import struct
import urllib.error

import numpy as np
import pytest

from pure_backprop import data
from pure_backprop.data import DataError, Dataset

FILES = list(data.MNIST_FILES.values())  # train images, train labels, test images, test labels


def _dataset(labels):
    """A dataset whose image ``i`` is the row ``[i, i]``: where each image went is readable."""
    labels = np.asarray(labels, np.int32)
    x = np.repeat(np.arange(len(labels), dtype=np.float32)[:, None], 2, axis=1)
    return Dataset(x, labels, x[:1], labels[:1], 10, "toy", (1, 2))


# --- split_validation and stratified_split -------------------------------------------------


def test_split_validation_partitions_the_training_images_keeping_each_with_its_label():
    labels = np.arange(50) % 5
    ds = data.split_validation(_dataset(labels), 0.3, seed=4)
    train, val = ds.x_train[:, 0].astype(int), ds.x_val[:, 0].astype(int)
    assert len(val) == 15 and len(train) == 35
    assert sorted(np.concatenate([train, val])) == list(range(50))
    np.testing.assert_array_equal(ds.y_train, labels[train])
    np.testing.assert_array_equal(ds.y_val, labels[val])
    np.testing.assert_array_equal(ds.x_test, _dataset(labels).x_test)
    assert (ds.num_classes, ds.name, ds.image_shape) == (10, "toy", (1, 2))


def test_split_validation_defaults_to_a_fifth_and_seed_0():
    ds = _dataset(np.arange(60) % 3)
    default, explicit = data.split_validation(ds), data.split_validation(ds, 0.2, 0)
    for a, b in zip(default, explicit):
        np.testing.assert_array_equal(a, b)
    assert len(default.x_val) == 12
    assert not np.array_equal(default.x_val, data.split_validation(ds, 0.2, 1).x_val)


def test_a_validation_fraction_of_0_keeps_every_image_for_training_and_no_validation():
    ds = data.split_validation(_dataset(np.arange(20) % 2), 0.5)  # a dataset that had a validation split
    for zero in (0, 0.0):
        kept = data.split_validation(ds, zero)
        assert kept.x_val is None and kept.y_val is None
        assert kept.x_train is ds.x_train and kept.y_train is ds.y_train


@pytest.mark.parametrize("fraction", [-0.1, 1, 1.0, True, "0.2", None])
def test_split_validation_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match=rf"^split_validation: fraction must be in \[0, 1\), got {fraction!r}$"):
        data.split_validation(_dataset(np.arange(20) % 2), fraction)


def test_split_validation_takes_classes_of_two_and_refuses_a_class_of_one():
    ds = data.split_validation(_dataset([0, 0, 1, 1]), 0.5)  # the fewest of a class it can split
    assert sorted(ds.y_val) == [0, 1] and sorted(ds.y_train) == [0, 1]
    with pytest.raises(DataError) as e:
        data.split_validation(_dataset([0, 0, 0, 1, 2, 2]), 0.5)
    assert str(e.value) == ("class 1 has only 1 training sample; a stratified validation split needs at least 2 "
                            "samples of each class (a validation fraction of 0 keeps them all for training)")


def test_split_validation_needs_one_sample_of_each_class_on_each_side():
    labels = np.arange(30) % 3  # 30 samples, 3 classes
    assert len(data.split_validation(_dataset(labels), 0.1).x_val) == 3  # held == classes: allowed
    assert len(data.split_validation(_dataset(labels), 0.9).x_train) == 3  # n - held == classes: allowed
    for fraction, held in ((0.05, 2), (0.95, 28)):
        with pytest.raises(DataError) as e:
            data.split_validation(_dataset(labels), fraction)
        assert str(e.value) == (f"a validation fraction of {fraction} of 30 training samples leaves {held} for "
                                f"validation and {30 - held} for training; each needs at least one sample of each "
                                f"of 3 classes")


@pytest.mark.parametrize("labels, held, quotas", [
    # quotas 2, 1, 1 and remainders 5, 5, 0 (in units of 1/10): the tie goes to the larger class
    ([0] * 5 + [1] * 3 + [2] * 2, 5, [3, 1, 1]),
    # quotas 0, 0, 0 and remainders 6, 6, 3 (units of 1/8): a tie of equal classes goes to the smaller label
    ([0] * 3 + [1] * 3 + [2] * 2, 2, [1, 1, 0]),
    ([7] * 3 + [4] * 3 + [9] * 2, 1, [1, 0, 0]),  # classes 4, 7, 9
    # quotas 2, 0 and remainders 1, 6 (units of 1/7): the largest remainder first, though its class is smaller
    ([0] * 5 + [1] * 2, 3, [2, 1]),
])
def test_the_places_left_over_go_to_the_largest_remainders_then_the_larger_class_then_the_smaller_label(
        labels, held, quotas):
    labels = np.asarray(labels)
    kept, held_out = data.stratified_split(labels, held, seed=0)
    classes = np.unique(labels)
    assert [int(np.sum(labels[held_out] == c)) for c in classes] == quotas
    assert sorted(np.concatenate([kept, held_out])) == list(range(len(labels)))


# --- the bundled digits ---------------------------------------------------------------------


def test_load_digits_defaults_and_fields():
    default, explicit = data.load_digits(), data.load_digits(0.2, 0)
    for a, b in zip(default, explicit):
        np.testing.assert_array_equal(a, b)
    assert (default.num_classes, default.name, default.image_shape) == (10, "digits", (8, 8))
    assert default.x_train.dtype == np.float32 and default.y_train.dtype == np.int32
    assert default.x_train.shape == (1437, 64) and len(default.x_test) == 360
    assert not np.array_equal(default.y_test, data.load_digits(0.2, 1).y_test)
    assert len(data.load_digits(0.5).x_test) == 899  # ceil(0.5 * 1797)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.2, True, "0.2"])
def test_load_digits_refuses_a_test_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match=rf"^load_digits: test_fraction must be in \(0, 1\), got {fraction!r}$"):
        data.load_digits(fraction)


# --- the MNIST reader -----------------------------------------------------------------------


def _idx(array):
    array = np.asarray(array)
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}[array.dtype]
    return struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _mnist(folder, **replace):
    """The four files (raw IDX) of 6 training and 3 test images of 2x3 pixels; ``replace``
    gives a file's array instead (keyword: the file's name with ``-`` for ``_``)."""
    rng = np.random.default_rng(0)
    arrays = {FILES[0]: rng.integers(0, 256, (6, 2, 3)).astype(np.uint8), FILES[1]: np.arange(6, dtype=np.uint8),
              FILES[2]: rng.integers(0, 256, (3, 2, 3)).astype(np.uint8), FILES[3]: np.array([9, 0, 4], np.uint8)}
    for key, array in replace.items():
        arrays[key.replace("_", "-")] = array
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(_idx(array))
    return arrays


def test_load_mnist_fields(tmp_path):
    arrays = _mnist(tmp_path)
    ds = data.load_mnist(tmp_path)
    assert (ds.num_classes, ds.name, ds.image_shape) == (10, "mnist", (2, 3))
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    np.testing.assert_array_equal(ds.y_train, np.arange(6))
    np.testing.assert_array_equal(ds.y_test, [9, 0, 4])
    np.testing.assert_allclose(ds.x_test, arrays[FILES[2]].reshape(3, 6) / 255.0, rtol=1e-7)
    _mnist(tmp_path / "thin", **{FILES[0]: np.ones((6, 1, 1), np.uint8), FILES[2]: np.ones((3, 1, 1), np.uint8)})
    assert data.load_mnist(tmp_path / "thin").image_shape == (1, 1)  # one pixel is enough


@pytest.mark.parametrize("replace, message", [
    ({FILES[0]: np.zeros((6, 6), np.uint8)}, "{0}: expected uint8 images of shape (N, rows, cols), got uint8 (6, 6)"),
    ({FILES[0]: np.zeros((6, 2, 3), np.int8)}, "{0}: expected uint8 images of shape (N, rows, cols), got int8 (6, 2, 3)"),
    ({FILES[1]: np.zeros((6, 1), np.uint8)}, "{1}: expected uint8 labels of shape (N,), got uint8 (6, 1)"),
    ({FILES[1]: np.zeros(6, np.int8)}, "{1}: expected uint8 labels of shape (N,), got int8 (6,)"),
    ({FILES[0]: np.zeros((6, 0, 3), np.uint8)}, "{0}: images of 0x3 pixels hold no pixels (shape (6, 0, 3))"),
    ({FILES[0]: np.zeros((6, 2, 0), np.uint8)}, "{0}: images of 2x0 pixels hold no pixels (shape (6, 2, 0))"),
    ({FILES[3]: np.array([9, 10, 4], np.uint8)}, "{3}: labels must be digits 0-9, found 10"),
    ({FILES[2]: np.zeros((3, 3, 2), np.uint8)}, "{0} and {2} have different image sizes ((2, 3) vs (3, 2))"),
])
def test_load_mnist_refuses_inconsistent_files_naming_them(tmp_path, replace, message):
    _mnist(tmp_path, **replace)
    with pytest.raises(DataError) as e:
        data.load_mnist(tmp_path)
    assert str(e.value) == message.format(*(tmp_path / name for name in FILES))


def test_load_mnist_names_every_missing_file(tmp_path):
    with pytest.raises(DataError) as e:
        data.load_mnist(tmp_path)
    assert str(e.value) == (f"{tmp_path}: missing MNIST files {', '.join(name + '[.gz]' for name in FILES)} "
                            f"(pass --download to fetch them)")


@pytest.mark.parametrize("raw, message", [
    (b"", "not an IDX file (wrong magic number empty)"),
    (b"\x00\x00\x08", "not an IDX file (wrong magic number 000008)"),
    (b"\x12\x34\x08\x01\x00\x00\x00\x01\x07", "not an IDX file (wrong magic number 12340801)"),
    (b"\x00\x00\x08\x01", "truncated IDX header (4 bytes, needs 8 for 1 dimensions)"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated IDX header (8 bytes, needs 12 for 2 dimensions)"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x02\x07", "truncated: header says shape (2,), which needs 10 bytes, file has 9"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x07\x07", "has trailing bytes: header says shape (1,), which needs 9 bytes, "
                                                  "file has 10"),
])
def test_the_idx_parser_says_what_is_wrong(raw, message):
    with pytest.raises(DataError) as e:
        data._parse_idx(raw, "f.idx")
    assert str(e.value) == f"f.idx: {message}"
    assert data._parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07", "f").tolist() == [7]


def test_long_shapes_are_abbreviated_in_messages_from_seven_dimensions():
    assert data._shape_text((1, 2, 3, 4, 5, 6)) == "(1, 2, 3, 4, 5, 6)"
    assert data._shape_text((1, 2, 3, 4, 5, 6, 7)) == "(1, 2, ..., 7) of 7 dimensions"


@pytest.mark.parametrize("mirror", ["http://example.org/mnist/", "https://example.org/m", "file:///data/mnist/"])
def test_check_mirror_takes_http_https_and_file_urls(mirror):
    assert data.check_mirror(mirror) == mirror


@pytest.mark.parametrize("mirror", [None, 5, b"https://example.org/", "ftp://example.org/mnist/", "https:///m/",
                                    "example.org/mnist"])
def test_check_mirror_refuses_anything_else_with_a_data_error(mirror):
    with pytest.raises(DataError) as e:
        data.check_mirror(mirror)
    assert str(e.value) == (f"mirror must be an http(s) or file URL of the folder holding the .gz files, like "
                            f"{data.MNIST_MIRROR} or file:///path/to/mnist/, got {mirror!r}")


# --- the download, through a stand-in for urlopen --------------------------------------------


class _Response(io.BytesIO):
    """What ``urlopen`` returns: ``read(size)`` records its sizes and can fail or look around."""

    def __init__(self, payload, reads, fail=None, during=None):
        super().__init__(payload)
        self.reads, self.fail, self.during = reads, fail, during

    def read(self, size=-1):
        self.reads.append(size)
        if self.during is not None:
            self.during()
        if self.fail is not None:
            raise self.fail
        return super().read(size)


@pytest.fixture
def fake_urlopen(monkeypatch):
    """Serves every MNIST file (2 MiB and a bit for the training images: several chunks);
    records the URLs, timeouts and read sizes."""
    calls = {"urls": [], "timeouts": [], "reads": []}
    big = np.zeros((2100, 32, 32), np.uint8)
    payloads = {FILES[0]: _idx(big), FILES[1]: _idx(np.zeros(2100, np.uint8)), FILES[2]: _idx(big[:3]),
                FILES[3]: _idx(np.zeros(3, np.uint8))}
    settings = {"fail": None, "during": None, "open_error": None}

    def urlopen(url, timeout=None):
        calls["urls"].append(url)
        calls["timeouts"].append(timeout)
        if settings["open_error"] is not None:
            raise settings["open_error"]
        name = url.rsplit("/", 1)[1].removesuffix(".gz")
        return _Response(payloads[name], calls["reads"], settings["fail"], settings["during"])

    monkeypatch.setattr(data.urllib.request, "urlopen", urlopen)
    return calls, settings


@pytest.mark.parametrize("mirror, base", [("http://host/mnist/", "http://host/mnist"),
                                          ("http://host/mnist", "http://host/mnist"),
                                          ("http://host/mnist//", "http://host/mnist"), ("http://host/X/", "http://host/X")])
def test_the_download_asks_for_each_missing_file_at_the_mirror_and_streams_it(tmp_path, fake_urlopen, mirror, base):
    calls, _ = fake_urlopen
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / FILES[1]).write_bytes(_idx(np.zeros(2100, np.uint8)))  # present: not fetched
    fetched = data.download_mnist(tmp_path / "d", mirror)
    assert calls["urls"] == [f"{base}/{name}.gz" for name in FILES if name != FILES[1]]
    assert fetched == [tmp_path / "d" / f"{name}.gz" for name in FILES if name != FILES[1]]
    assert calls["timeouts"] == [60.0] * 3  # the default
    assert None not in calls["reads"] and max(calls["reads"]) <= 1 << 20  # streamed: never read whole
    assert sorted(os.listdir(tmp_path / "d")) == sorted([FILES[1], *(f"{n}.gz" for n in FILES if n != FILES[1])])
    data.download_mnist(tmp_path / "e", mirror, timeout=7.5)
    assert calls["timeouts"][3:] == [7.5] * 4


def test_the_download_writes_a_part_file_beside_the_target_and_renames_it(tmp_path, fake_urlopen):
    _, settings = fake_urlopen
    seen = []
    settings["during"] = lambda: seen.append(sorted(os.listdir(tmp_path / "d")))
    data.download_mnist(tmp_path / "d", "http://host/m/")
    first = seen[0]  # while the first file downloads: one temporary file, named after it
    assert len(first) == 1 and first[0].startswith(f"{FILES[0]}.gz") and first[0].endswith(".part"), first


def test_the_download_makes_missing_parent_folders_and_removes_them_when_nothing_came(tmp_path, fake_urlopen):
    _, settings = fake_urlopen
    assert len(data.download_mnist(tmp_path / "a" / "b" / "c", "http://host/m/")) == 4
    settings["open_error"] = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    with pytest.raises(DataError) as e:
        data.download_mnist(tmp_path / "x" / "y", "http://host/m/")
    assert str(e.value) == (f"http://host/m/{FILES[0]}.gz: download failed (Connection refused); nothing written to "
                            f"{tmp_path / 'x' / 'y' / FILES[0]}.gz")
    assert sorted(os.listdir(tmp_path)) == ["a"]


def test_a_folder_that_cannot_be_removed_after_a_failed_download_keeps_the_error(tmp_path, fake_urlopen, monkeypatch):
    _, settings = fake_urlopen
    settings["open_error"] = urllib.error.URLError("timed out")
    monkeypatch.setattr(data.Path, "rmdir", lambda self: (_ for _ in ()).throw(OSError(39, "Directory not empty")))
    with pytest.raises(DataError, match=r"download failed \(timed out\)"):
        data.download_mnist(tmp_path / "x", "http://host/m/")


def test_download_into_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(DataError) as e:
        data.download_mnist(tmp_path / "f", "http://host/m/")
    assert str(e.value) == f"{tmp_path / 'f'}: is a file, not a folder; give a folder for the MNIST files"


def test_a_read_that_fails_names_the_url_the_reason_and_the_target(tmp_path, fake_urlopen):
    _, settings = fake_urlopen
    settings["fail"] = ConnectionResetError()  # no message: the type names it
    target = tmp_path / "d" / f"{FILES[0]}.gz"
    with pytest.raises(DataError) as e:
        data.download_mnist(tmp_path / "d", "http://host/m/")
    assert str(e.value) == f"http://host/m/{FILES[0]}.gz: download failed (ConnectionResetError); nothing written to {target}"
    settings["fail"] = http.client.IncompleteRead(b"ab", 3)
    with pytest.raises(DataError) as e:
        data.download_mnist(tmp_path / "d", "http://host/m/")
    assert str(e.value) == (f"http://host/m/{FILES[0]}.gz: download failed (IncompleteRead(2 bytes read, 3 more "
                            f"expected)); nothing written to {target}")
    assert not (tmp_path / "d").exists()


def test_a_file_that_does_not_parse_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout=None: _Response(gzip.compress(b"bad"), []))
    target = tmp_path / f"{FILES[0]}.gz"
    with pytest.raises(DataError) as e:
        data._download_one("http://host/m/x.gz", target, 5.0)
    assert str(e.value) == ("http://host/m/x.gz: downloaded file is not a valid IDX file, not saved as "
                            f"{target}: not an IDX file (wrong magic number 626164)")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where", ["mkstemp", "write", "replace"])
def test_a_download_that_cannot_be_written_names_the_target_and_the_reason(tmp_path, fake_urlopen, monkeypatch, where):
    target = tmp_path / f"{FILES[3]}.gz"
    if where == "mkstemp":
        target = tmp_path / "gone" / f"{FILES[3]}.gz"
        reason = "No such file or directory"
    else:
        reason = "No space left on device" if where == "write" else "Permission denied"
        error = OSError(28, reason) if where == "write" else PermissionError(13, reason)
        if where == "write":
            real = os.fdopen

            def fdopen(fd, mode):
                f = real(fd, mode)
                f.write = lambda chunk: (_ for _ in ()).throw(error)
                return f

            monkeypatch.setattr(data.os, "fdopen", fdopen)
        else:
            monkeypatch.setattr(data.os, "replace", lambda a, b: (_ for _ in ()).throw(error))
    with pytest.raises(DataError) as e:
        data._download_one(f"http://host/m/{FILES[3]}.gz", target, 5.0)
    assert str(e.value) == f"{target}: cannot write the download of http://host/m/{FILES[3]}.gz ({reason})"
    assert not any(name.endswith(".part") for name in os.listdir(tmp_path))


@pytest.mark.parametrize("error, reason", [
    (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), "Connection refused"),
    (urllib.error.URLError("timed out"), "timed out"),
    (FileNotFoundError(2, "No such file or directory"), "No such file or directory"),
    (ValueError("unknown url type: 'x'"), "unknown url type: 'x'"),
    (http.client.IncompleteRead(b"", 4), "IncompleteRead(0 bytes read, 4 more expected)"),
])
def test_the_reason_of_an_error_is_its_innermost_message(error, reason):
    assert data._reason(error) == reason
