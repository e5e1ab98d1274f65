"""The learner install (requirements-workshop.txt, the `workshop` extra) against the book's pins,
and the offline bundle's script (tools/make_workshop_bundle.sh): fast, no network, no installs."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
WORKSHOP = ROOT / "requirements-workshop.txt"
BUNDLE_SCRIPT = ROOT / "tools" / "make_workshop_bundle.sh"
# What a learner does not need: the book toolchain, the other backends, batch workers, the tests.
LEFT_OUT = {"jupyter-book", "jax", "ray", "torch", "pytest", "nbmake", "ruff"}
CHAPTERS_NEED = {"keras", "tensorflow", "matplotlib", "jupyterlab", "ipykernel"}


def requirements(lines):
    """{name: (extra, specifier)} of requirement lines, comments and blank lines skipped."""
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, extra, specifier = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[([^\]]+)\])?(.*)",
                                              line).groups()
        found[re.sub(r"[-_.]+", "-", name).lower()] = (extra or "", specifier.replace(" ", ""))
    return found


def read(path):
    return requirements(path.read_text().splitlines())


def pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_workshop_pin_is_requirements_txt_s():
    book, workshop = read(ROOT / "requirements.txt"), read(WORKSHOP)
    assert set(workshop) <= set(book), "a package the book does not pin"
    for name, pin in workshop.items():
        assert pin == book[name], name


def test_the_workshop_install_leaves_out_the_tools_and_keeps_what_the_chapters_need():
    workshop = read(WORKSHOP)
    assert not LEFT_OUT & set(workshop)
    assert CHAPTERS_NEED <= set(workshop)
    sdlib_needs = requirements(pyproject()["dependencies"])
    assert set(sdlib_needs) <= set(workshop), "the bundle would lack one of sdlib's dependencies"


def test_sdlib_itself_is_not_a_line_of_the_file():
    # A checkout adds `pip install -e .`, the bundle its sdlib wheel: a path here breaks the bundle.
    lines = [line.strip() for line in WORKSHOP.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert not [line for line in lines if line.startswith(("-e", ".", "/")) or "sdlib" in line]


def test_the_workshop_extra_is_the_file():
    assert requirements(pyproject()["optional-dependencies"]["workshop"]) == read(WORKSHOP)


def test_the_bundle_script_parses():
    subprocess.run(["bash", "-n", str(BUNDLE_SCRIPT)], check=True)


def test_the_bundle_script_says_what_it_takes_and_refuses_unknown_targets_at_once(tmp_path):
    shown = subprocess.run(["bash", str(BUNDLE_SCRIPT), "--help"], capture_output=True,
                           text=True, check=True).stdout
    for option in ("--platform", "--python", "--upgrade", "linux-x86_64", "macos-arm64",
                   "windows-amd64"):
        assert option in shown
    out = tmp_path / "bundle"
    for wrong, message in ((["--platform", "linux-sparc"], "unknown platform 'linux-sparc'"),
                           (["--python", "3"], "versions like 3.11"), ([], None)):
        args = [str(out), *wrong] if message else []
        done = subprocess.run(["bash", str(BUNDLE_SCRIPT), *args], capture_output=True, text=True)
        assert done.returncode != 0
        assert (message or "OUT_DIR is missing") in done.stderr
    assert not out.exists(), "a refused run must not have started the bundle"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_bundle_script_passes_shellcheck():
    subprocess.run(["shellcheck", str(BUNDLE_SCRIPT)], check=True)
