"""The command line: generates a PNG, never overwrites unless asked, writes atomically."""

import numpy as np
import pytest
from PIL import Image

from sdlib.cli import main
from sdlib.cli.common import save_png

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


@pytest.fixture()
def picture(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.full((64, 48, 3), 90, np.uint8)).save(path)
    mask = np.zeros((64, 48), np.uint8)
    mask[10:30, 10:30] = 255
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    return path


EDIT = ["--preset", "tiny", "--steps", "3", "--seed", "0", "--no-jit"]


def test_img2img_redraws_an_image_file_at_its_size(tmp_path, picture):
    out = tmp_path / "out.png"
    assert main(["img2img", str(picture), "a red circle", "--strength", "0.6", *EDIT,
                 "--out", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape == (64, 48, 3)


def test_inpaint_repaints_the_white_part_of_the_mask(tmp_path, picture):
    out = tmp_path / "out.png"
    assert main(["inpaint", str(picture), str(tmp_path / "mask.png"), "a red circle", *EDIT,
                 "--paste-original", "--out", str(out)]) == 0
    result = np.asarray(Image.open(out))
    assert (result[40:, :] == 90).all()  # black in the mask: the original pixels, pasted back


def test_edit_commands_name_what_is_wrong(tmp_path, picture, capsys):
    assert main(["img2img", str(tmp_path / "nowhere.png"), "x", *EDIT,
                 "--out", str(tmp_path / "o.png")]) == 2
    assert "No image at" in capsys.readouterr().err
    (tmp_path / "taken.png").write_bytes(b"keep")
    assert main(["inpaint", str(picture), str(tmp_path / "mask.png"), "x", *EDIT,
                 "--out", str(tmp_path / "taken.png")]) == 2
    assert (tmp_path / "taken.png").read_bytes() == b"keep"
    assert main(["img2img", str(picture), "x", "--strength", "2", *EDIT,
                 "--out", str(tmp_path / "s.png")]) == 2
    assert "strength must lie in [0, 1]" in capsys.readouterr().err
