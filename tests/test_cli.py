"""The command line: generates a PNG, never overwrites unless asked, writes atomically."""

import numpy as np
import pytest
from PIL import Image

from sdlib.cli import main
from sdlib.cli.generate import save_png

ARGS = ["generate", "a small red circle", "--preset", "tiny", "--steps", "2", "--seed", "0",
        "--no-jit"]


def test_generate_writes_a_png(tmp_path, capsys):
    out = tmp_path / "image.png"
    assert main([*ARGS, "--out", str(out)]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (64, 64, 3)
    assert "saved" in capsys.readouterr().out


def test_saved_png_has_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = save_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "shared.png")
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_existing_file_is_not_overwritten_without_the_flag(tmp_path, capsys):
    out = tmp_path / "image.png"
    out.write_bytes(b"my precious drawing")
    assert main([*ARGS, "--out", str(out)]) == 2
    assert out.read_bytes() == b"my precious drawing"
    assert "--overwrite" in capsys.readouterr().err


def test_overwrite_flag_replaces_the_file(tmp_path):
    out = tmp_path / "image.png"
    out.write_bytes(b"old")
    assert main([*ARGS, "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_batch_writes_numbered_files_and_checks_them_all_first(tmp_path):
    (tmp_path / "img-1.png").write_bytes(b"keep")
    assert main([*ARGS, "--out", str(tmp_path / "img.png"), "--batch-size", "2"]) == 2
    assert not (tmp_path / "img-0.png").exists()  # refused before any work
    assert (tmp_path / "img-1.png").read_bytes() == b"keep"


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path / "x.png"), "--guidance", "-1"]) == 2
    assert "guidance_scale" in capsys.readouterr().err


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_save(self, stream, format=None):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []
