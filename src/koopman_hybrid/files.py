"""Atomic file writes: readers see the old file or the complete new one, never a part.

Each writer creates a temporary file in the target's folder, flushes it to disk with
``fsync`` and moves it onto the target with ``os.replace``, which is atomic when both
paths are on the same file system. The temporary file is removed if writing fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]

# Files from mkstemp get mode 0o600. Finished files get the mode that open() would give
# them (0o666 minus the umask). Reading the umask means setting it, so this happens
# once, at import, rather than on every write from possibly concurrent threads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    """Flush a folder entry to disk so that a rename survives a crash (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` when the block exits cleanly.

    The temporary file is created (empty) in the folder of ``path``, so the final
    ``os.replace`` stays on one file system. Its name ends with the suffix of ``path``,
    so that writers which add a missing suffix (``numpy.save``) write to it unchanged.
    Missing parent folders are created.

    Parameters
    ----------
    path : str or os.PathLike
        Final location of the file.

    Yields
    ------
    pathlib.Path
        Temporary file to write to. On a clean exit it is flushed to disk and moved
        onto ``path``. If the block raises, it is deleted and ``path`` is left as it
        was.

    Raises
    ------
    FileNotFoundError
        If the block deleted or renamed the temporary file.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "out.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (folder / "out.txt").read_text()
    'done'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)

    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"Temporary file {tmp} for {target} was removed before it could be "
                "moved into place. Write to the yielded path, do not delete or "
                "rename it."
            )
        os.chmod(tmp, _FILE_MODE)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

    _fsync_directory(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating parent folders.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. An existing file is replaced.
    data : bytes
        Content to write.

    Raises
    ------
    TypeError
        If ``data`` is not bytes-like.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"data must be bytes, bytearray or memoryview, got {type(data).__name__}. "
            "Encode text with atomic_write_text instead."
        )

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as stream:
            stream.write(data)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, encoding: str = "utf-8"
) -> None:
    """Write ``text`` to ``path`` atomically, creating parent folders.

    Line endings are written as they appear in ``text``, with no translation to the
    platform's convention.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. An existing file is replaced.
    text : str
        Content to write.
    encoding : str, default "utf-8"
        Text encoding.

    Raises
    ------
    TypeError
        If ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}.")

    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically, creating parent folders.

    The JSON uses an indent of 2, keeps the key order of ``obj`` and ends with a
    newline. NaN and infinities are written as ``NaN`` and ``Infinity``, which
    Python's ``json`` module reads back but strict JSON parsers reject.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. An existing file is replaced.
    obj : object
        Value that ``json.dumps`` can serialise.

    Raises
    ------
    TypeError
        If ``obj`` contains a value that JSON cannot represent. The file is not
        touched in that case.
    """
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    atomic_write_text(path, text)
