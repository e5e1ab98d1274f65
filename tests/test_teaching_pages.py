"""The Teaching part's pages against the code they describe: the cheat sheet's signatures and
defaults are sdlib's, its examples call only real arguments and its commands parse; the facilitator
guide names every chapter; the prose pages keep to the page's width and link to files that exist."""

import ast
import inspect
import json
import re
import shlex
from pathlib import Path

import pytest

import sdlib
from sdlib import cli

ROOT = Path(__file__).parents[1]
TEACHING = ROOT / "book" / "teaching"
CHEAT_SHEET = TEACHING / "cheat_sheet.md"
# Pages that others write at the same time as this part; a link to them may come first.
PENDING = {ROOT / "book" / "teaching" / "offline_bundle.md",
           ROOT / "notebooks" / "teaching" / "challenge.ipynb"}
CODE_WIDTH = 88  # what the page shows of a code line (tools/check_book.py CODE_WIDTH)
PROSE_PAGES = ("learner_setup.md", "instructor_notes.md", "cheat_sheet.md")


def code_blocks(path, language):
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"),
                      re.S | re.M)


def pipeline_calls(source):
    """(method name, ast.Call) of every call of ``pipe.X``, ``StableDiffusion.X`` or
    ``sdlib.StableDiffusion.X`` in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if owner in ("pipe", "StableDiffusion", "sdlib.StableDiffusion"):
                yield node.func.attr, node


def parameters(method):
    signature = inspect.signature(getattr(sdlib.StableDiffusion, method))
    return {name: value for name, value in signature.parameters.items() if name != "self"}


def test_the_cheat_sheet_s_signatures_are_sdlib_s_with_its_defaults():
    signatures = code_blocks(CHEAT_SHEET, "python")[0]
    checked = set()
    for method, call in pipeline_calls(signatures):
        params = parameters(method)
        names = list(params)
        assert [ast.unparse(arg) for arg in call.args] == names[:len(call.args)], method
        for keyword in call.keywords:
            assert keyword.arg in params, f"{method}: no argument {keyword.arg}"
            default = params[keyword.arg].default
            assert ast.literal_eval(keyword.value) == default, f"{method}({keyword.arg}=)"
        checked.add(method)
    assert {"from_preset", "from_pretrained", "text_to_image", "image_to_image", "inpaint",
            "load_lora_weights", "load_textual_inversion", "save_pretrained"} <= checked


def test_the_cheat_sheet_s_examples_pass_only_real_arguments():
    examples = "\n".join(code_blocks(CHEAT_SHEET, "python")[1:])
    calls = list(pipeline_calls(examples))
    assert calls
    for method, call in calls:
        assert hasattr(sdlib.StableDiffusion, method), method
        params = parameters(method)
        assert len(call.args) <= len(params), method
        for keyword in call.keywords:
            assert keyword.arg in params, f"{method}: no argument {keyword.arg}"


def test_the_cheat_sheet_s_commands_parse():
    parser = cli.build_parser()
    lines = [line for block in code_blocks(CHEAT_SHEET, "bash") for line in block.splitlines()
             if line.startswith("python -m sdlib ")]
    assert {shlex.split(line)[3] for line in lines} >= {"generate", "img2img", "inpaint",
                                                        "batch", "doctor", "challenge"}
    for line in lines:
        words = shlex.split(line, comments=True)
        words = words[:words.index(">")] if ">" in words else words
        try:
            parser.parse_args(words[3:])
        except SystemExit as exit:  # --help exits 0; a bad option exits 2
            assert exit.code == 0, line


def test_the_cheat_sheet_s_samplers_and_presets_are_sdlib_s():
    text = CHEAT_SHEET.read_text(encoding="utf-8")
    from sdlib.sampling.samplers import SAMPLERS

    sampler_row = next(line for line in text.splitlines() if line.startswith("| `sampler`"))
    assert set(re.findall(r'`"(\w+)"`', sampler_row)) == set(SAMPLERS)
    preset_row = next(line for line in text.splitlines() if line.startswith("| presets"))
    assert set(re.findall(r"`([\w-]+)`", preset_row)) - {"sdlib.PRESETS"} == set(sdlib.PRESETS)


def test_the_facilitator_guide_names_every_chapter_by_its_title():
    guide = json.loads((ROOT / "notebooks" / "teaching" / "facilitator_guide.ipynb").read_text())
    source = next("".join(cell["source"]) for cell in guide["cells"]
                  if cell["cell_type"] == "code" and "TITLES = {" in "".join(cell["source"]))
    titles = ast.literal_eval(re.search(r"TITLES = (\{.*?\})\n", source, re.S).group(1))
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        chapter = json.loads(path.read_text())
        heading = next(line for cell in chapter["cells"] if cell["cell_type"] == "markdown"
                       for line in "".join(cell["source"]).splitlines()
                       if line.startswith("# "))
        assert heading[2:].startswith(titles[int(path.name[:2])]), path.name


@pytest.mark.parametrize("page", [TEACHING / name for name in PROSE_PAGES],
                         ids=lambda path: path.name)
def test_teaching_pages_fit_the_page_and_link_to_files_that_exist(page):
    text = page.read_text(encoding="utf-8")
    for block in re.findall(r"^```\w*\n(.*?)^```", text, re.S | re.M):
        wide = [line for line in block.splitlines() if len(line) > CODE_WIDTH]
        assert not wide, f"{page.name}: code wider than {CODE_WIDTH} columns: {wide[0]!r}"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        path = (page.parent / target).resolve()
        assert path.exists() or path in PENDING, f"{page.name}: no file {target}"
