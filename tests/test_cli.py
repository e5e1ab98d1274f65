"""The command line: writes PNG, JPEG or WebP as the extension says, checks --out before any work,
never overwrites unless asked, writes atomically, documents every option, warns about words a mini
model never saw, and stays quiet (no C++ logs, no escape codes in a redirected stdout)."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

from sdlib.__main__ import main as python_m_sdlib
from sdlib.cli import build_parser, main
from sdlib.cli.output import FORMATS, save_image
from sdlib.cli.quiet import native_logs_hidden
from sdlib.mini import shapes
from sdlib.pipeline import StableDiffusion

ARGS = ["generate", "a small red circle", "--preset", "tiny", "--steps", "2", "--seed", "0",
        "--no-jit"]
MAGIC = {"PNG": b"\x89PNG", "JPEG": b"\xff\xd8", "WEBP": b"RIFF"}


def image_format_of(path):
    data = open(path, "rb").read(12)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for name, magic in MAGIC.items() if data.startswith(magic)), None)


@pytest.fixture()
def no_model(monkeypatch):
    """Loading a model fails the test: what is checked must be checked before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(StableDiffusion, "from_preset", refuse)
    monkeypatch.setattr(StableDiffusion, "from_pretrained", refuse)


def test_generate_writes_a_png(tmp_path, capsys):
    out = tmp_path / "image.png"
    assert main([*ARGS, "--out", str(out)]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (64, 64, 3)
    assert "saved" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.jpeg", "a.webp", "A.JPG"])
def test_the_extension_chooses_the_format(tmp_path, name):
    path = save_image(np.full((8, 8, 3), 200, np.uint8), tmp_path / name)
    expected = FORMATS[os.path.splitext(name)[1].lower()][0]
    assert image_format_of(path) == expected
    assert Image.open(path).format == expected


def test_a_batch_numbers_its_files_in_the_chosen_format(tmp_path):
    assert main([*ARGS, "--out", str(tmp_path / "img.jpg"), "--batch-size", "2"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["img-0.jpg", "img-1.jpg"]
    assert {image_format_of(tmp_path / name) for name in os.listdir(tmp_path)} == {"JPEG"}


def test_saved_png_has_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = save_image(np.zeros((8, 8, 3), np.uint8), tmp_path / "shared.png")
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_existing_file_is_not_overwritten_without_the_flag(tmp_path, capsys, no_model):
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


def test_batch_writes_numbered_files_and_checks_them_all_first(tmp_path, no_model):
    (tmp_path / "img-1.png").write_bytes(b"keep")
    assert main([*ARGS, "--out", str(tmp_path / "img.png"), "--batch-size", "2"]) == 2
    assert not (tmp_path / "img-0.png").exists()  # refused before any work
    assert (tmp_path / "img-1.png").read_bytes() == b"keep"


@pytest.mark.parametrize("out, extra, message", [
    ("image.gif", [], "ends in '.gif'; end it in one of .png, .jpg, .jpeg, .webp"),
    ("image.bmp", [], "ends in '.bmp'"),
    ("image", [], "has no extension"),
    (".", [], "is a folder; give a file name in it"),
    (".", ["--overwrite"], "is a folder; give a file name in it"),
    ("missing/image.png", [], "No folder"),
    ("file.txt/image.png", [], "is a file, not a folder"),
    ("taken.png", ["--batch-size", "2"], "taken-1.png is a folder"),
])
def test_out_problems_are_refused_before_any_model_loads(tmp_path, capsys, no_model, out, extra,
                                                         message):
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "taken-1.png").mkdir()
    assert main([*ARGS, "--out", str(tmp_path / out), *extra]) == 2
    assert message in capsys.readouterr().err


def test_an_unwritable_folder_is_refused_before_any_model_loads(tmp_path, capsys, no_model,
                                                                monkeypatch):
    def read_only(*args, **kwargs):  # chmod would not stop root, who runs some CI
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert main([*ARGS, "--out", str(tmp_path / "image.png")]) == 2
    assert f"Cannot write into {tmp_path} (Permission denied)" in capsys.readouterr().err


def test_edit_commands_check_out_before_reading_or_loading(tmp_path, capsys, no_model):
    assert main(["img2img", str(tmp_path / "nowhere.png"), "x", "--preset", "tiny",
                 "--out", str(tmp_path / "o.gif")]) == 2
    assert "'.gif'" in capsys.readouterr().err


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path / "x.png"), "--guidance", "-1"]) == 2
    assert "guidance_scale" in capsys.readouterr().err


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_save(self, stream, format=None, **options):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(np.zeros((4, 4, 3), np.uint8), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def help_entries(command, capsys):
    """{option: its help entry, whitespace joined} from ``command --help``."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.split("options:\n", 1)[1].splitlines()
    entries, current = {}, None
    for line in lines:
        if line.startswith("  ") and line[2] != " ":  # a new option; deeper lines continue one
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current and line.strip():
            entries[current] += " " + line
    return {option: " ".join(text.split()) for option, text in entries.items()}


@pytest.mark.parametrize("command", ["generate", "img2img", "inpaint"])
def test_every_option_has_help_and_its_default(command, capsys):
    parser = build_parser()
    subparser = parser._subparsers._group_actions[0].choices[command]
    entries = help_entries(command, capsys)
    for action in subparser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        entry = entries[action.option_strings[0]]
        assert action.help and " ".join(action.help.split()[:4]) in entry, f"{entry!r}: no help"
        if action.default not in (None, False):
            assert f"(default: {action.default})" in entry, entry
        else:
            assert "(default: " in entry, f"{entry!r} does not say what happens by default"
    for action in subparser._actions:
        if not action.option_strings:  # positional arguments are explained too
            assert action.help, f"{action.dest} has no help text"


def test_unknown_words_are_the_ones_no_training_caption_holds():
    assert shapes.unknown_words("an astronaut riding a horse") == ["astronaut", "riding", "horse"]
    assert shapes.unknown_words("A big GREY square, upper-left; on white") == []
    assert shapes.unknown_words("3 red red circles") == ["3", "circles"]
    rng = np.random.default_rng(0)
    specs = shapes.sample_specs(2000, rng, include_held_out=True)
    captions = ([shapes.canonical_caption(spec) for spec in specs[:200]]
                + [shapes.varied_caption(spec, rng) for spec in specs])
    assert [caption for caption in captions if shapes.unknown_words(caption)] == []
    seen = {word for caption in captions for word in caption.replace(",", " ").split()}
    assert seen == shapes.CAPTION_WORDS  # no word the model never saw counts as known


def test_a_mini_model_warns_before_loading_about_words_it_never_saw(tmp_path, capsys, no_model):
    out = ["--out", str(tmp_path / "x.png")]
    with pytest.raises(AssertionError, match="a model was loaded"):
        python_m_sdlib(["generate", "an astronaut riding a horse", "--preset", "mini-shapes",
                        "--negative-prompt", "blurry", *out])
    err = capsys.readouterr().err
    assert "warning: mini-shapes never saw these words of the prompt: astronaut, riding, horse;"\
        in err
    assert "of the negative prompt: blurry;" in err
    assert "it knows shapes circle/square/triangle" in err
    for known in (["generate", "a big blue square on white", "--preset", "mini-shapes"],
                  ["generate", "an astronaut", "--preset", "tiny"]):  # tiny knows no words
        with pytest.raises(AssertionError, match="a model was loaded"):
            python_m_sdlib([*known, *out])
        assert "never saw" not in capsys.readouterr().err


def test_redirected_output_gets_plain_lines(tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path / "image.png")]) == 0
    out = capsys.readouterr().out
    assert "made 1 image in" in out
    assert not any(code in out for code in ("\x1b", "\b", "\r"))  # keras' Progbar draws with them


NATIVE_LOGS = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"E0000 00:00:1796169015.165069    3376 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    b"CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
    b"I0000 00:00:1796168951.473166    2854 cudart_stub.cc:31] Could not find cuda drivers\n",
    b"2025-09-17 14:44:05.176998: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:467] "
    b"Unable to register cuFFT factory\n",
]


def test_native_log_lines_are_dropped_and_everything_else_kept(capfd, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with native_logs_hidden():
        for line in NATIVE_LOGS:
            os.write(2, line)
        os.write(2, b"F0000 00:00:1.0  1 check.cc:1] Check failed: a fatal line stays\n")
        os.write(2, b"a line of our own\nand one without an end")
    assert sorted(capfd.readouterr().err.splitlines()) == [
        "F0000 00:00:1.0  1 check.cc:1] Check failed: a fatal line stays",
        "a line of our own", "and one without an end"]


def test_native_logs_show_when_asked_for(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with native_logs_hidden():
        os.write(2, NATIVE_LOGS[1])
    assert "cuInit" in capfd.readouterr().err


def test_python_m_sdlib_is_quiet_and_warns_in_a_real_process(tmp_path):
    out = tmp_path / "shape.jpg"
    environment = {name: value for name, value in os.environ.items()
                   if name != "TF_CPP_MIN_LOG_LEVEL"}  # sdlib's own default, as users run it
    result = subprocess.run(
        [sys.executable, "-m", "sdlib", "generate", "an astronaut riding a horse", "--preset",
         "mini-shapes", "--steps", "3", "--seed", "0", "--no-jit", "--out", str(out)],
        capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    assert image_format_of(out) == "JPEG"
    assert "made 1 image in" in result.stdout and "\x1b" not in result.stdout
    assert "never saw these words of the prompt: astronaut, riding, horse" in result.stderr
    assert "cuInit" not in result.stderr  # logged after start-up, where the CLI filters


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
