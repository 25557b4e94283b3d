from __future__ import annotations

import json
import os

import pytest

from koopman_hybrid.files import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


def test_write_bytes_creates_file(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"\x00\x01\xff")
    assert target.read_bytes() == b"\x00\x01\xff"


def test_write_bytes_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(target, b"data")
    assert target.read_bytes() == b"data"


def test_write_bytes_replaces_existing_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old content that is longer")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_write_bytes_leaves_no_temporary_file(tmp_path):
    atomic_write_bytes(tmp_path / "out.bin", b"data")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.bin"]


def test_write_bytes_rejects_text(tmp_path):
    with pytest.raises(TypeError, match="atomic_write_text"):
        atomic_write_bytes(tmp_path / "out.bin", "text")


def test_written_file_mode_follows_umask(tmp_path):
    # open() creates files with 0o666 minus the umask. Temporary files start at
    # 0o600, so this checks that the mode is reset before the file is moved.
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"data")
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_text_keeps_utf8_and_newlines(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "Koopman \u00e9\u03bb\r\nline\n")
    assert target.read_bytes() == "Koopman \u00e9\u03bb\r\nline\n".encode()


def test_write_text_rejects_bytes(tmp_path):
    with pytest.raises(TypeError, match="str"):
        atomic_write_text(tmp_path / "out.txt", b"bytes")


def test_write_json_round_trips(tmp_path):
    target = tmp_path / "settings.json"
    settings = {"delay": 3, "rank": None, "widths": [2, 8, 6]}
    atomic_write_json(target, settings)
    assert json.loads(target.read_text()) == settings


def test_write_json_layout(tmp_path):
    target = tmp_path / "settings.json"
    atomic_write_json(target, {"b": 1, "a": [2]})
    assert target.read_text() == '{\n  "b": 1,\n  "a": [\n    2\n  ]\n}\n'


def test_write_json_unserialisable_keeps_old_file(tmp_path):
    target = tmp_path / "settings.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"value": object()})
    assert target.read_text() == "old"


def test_atomic_path_yields_temporary_in_same_folder(tmp_path):
    target = tmp_path / "model.safetensors"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp != target
        assert tmp.name.endswith(".safetensors")
        tmp.write_bytes(b"weights")


def test_atomic_path_moves_file_on_clean_exit(tmp_path):
    target = tmp_path / "model.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"weights")
    assert target.read_bytes() == b"weights"


def test_atomic_path_target_absent_until_exit(tmp_path):
    target = tmp_path / "model.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"weights")
        assert not target.exists()


def test_atomic_path_error_keeps_old_file(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"


def test_atomic_path_error_removes_temporary(tmp_path):
    target = tmp_path / "model.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_rejects_deleted_temporary(tmp_path):
    target = tmp_path / "model.bin"
    with pytest.raises(FileNotFoundError, match="removed before"):
        with atomic_path(target) as tmp:
            tmp.unlink()
    assert not target.exists()
