"""The doctor: its version table is the book's (requirements.txt, pyproject.toml); simulated
failures (a missing package, a wrong Keras, an unwritable cache, no GPU where one was asked for,
no network) give the right status and the exact fix; warnings never fail the exit status;
--json parses; and a real 2-step run compiles once. No test reaches the network."""

import importlib.metadata
import json
import os
import re
import socket
import sys
import types
from pathlib import Path

import keras
import pytest

import sdlib
from sdlib import device, doctor
from sdlib.cli import build_parser, main
from sdlib.doctor import environment, machine, models
from sdlib.doctor.result import Context, Result, fail, ok, warn
from sdlib.mini import judge
from sdlib.pipeline import StableDiffusion

ROOT = Path(__file__).resolve().parents[1]
BOOK_TOOLS = {"jupyter-book", "ipykernel", "pytest", "pytest-xdist", "nbmake",
              "ruff",  # build and test only
              "ray"}  # `sdlib batch --workers`, its tests, chapter 10 where installed
CPU = device.DeviceInfo(backend="tensorflow", kind="cpu", name="Test CPU", memory_gb=None,
                        cpu_model="Test CPU", cpu_cores=2, cpu_bf16=True)


def split_requirement(line):
    """"jax[cpu]==0.10.2" -> ("jax", "cpu", "==0.10.2")."""
    name, extra, specifier = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[([^\]]+)\])?(.*)",
                                          line.strip()).groups()
    return name.lower(), extra or "", specifier


@pytest.fixture()
def versions(monkeypatch):
    """Installed versions as a test says: {name: version, or None for not installed}."""
    real = importlib.metadata.version
    told = {}

    def version(name):
        if name not in told:
            return real(name)
        if told[name] is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return told[name]

    monkeypatch.setattr(environment.importlib.metadata, "version", version)
    return told


def by_name(results):
    return {result.name: result for result in results}


# === One table of versions, the book's ===
def test_the_pins_are_requirements_txt():
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    pinned = {name: (extra, specifier) for name, extra, specifier in map(split_requirement, lines)}
    assert {package.name: (package.extra, package.pinned)
            for package in environment.PACKAGES} == {
        name: pin for name, pin in pinned.items() if name not in BOOK_TOOLS}


def test_what_sdlib_needs_is_pyproject_toml():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # the workshop extra pins the book's versions (tests/test_workshop_install.py checks those)
    extras = project["optional-dependencies"]
    lines = project["dependencies"] + [line for name, extra in extras.items()
                                       if name != "workshop" for line in extra]
    needed = {name: specifier for name, _, specifier in map(split_requirement, lines)}
    for package in environment.PACKAGES:
        assert needed.get(package.name) == package.needed, package.name
    assert environment.HUB_REQUIREMENT in project["optional-dependencies"]["hub"]
    assert project["requires-python"] == ">={}.{}".format(*environment.PYTHON_NEEDED)


@pytest.mark.parametrize("version, specifier, expected", [
    ("3.15.1", "==3.15.1", True), ("3.15.0", "==3.15.1", False), ("3.8", ">=3.8", True),
    ("3.7.9", ">=3.8", False), ("2.4.6", ">=1.26,<3", True), ("3.0.0", ">=1.26,<3", False),
    ("2.21.0rc1", ">=2.18", True), ("2.13.0+cpu", ">=2.1", True),
])
def test_version_specifiers(version, specifier, expected):
    assert environment.satisfies(version, specifier) is expected


# === Packages: missing, wrong, hosted ===
def test_a_missing_package_fails_with_its_install_command(versions):
    versions["matplotlib"] = None
    result = environment.check_package(Context(), next(
        package for package in environment.PACKAGES if package.name == "matplotlib"))
    assert result.status == "fail"
    assert result.detail == "not installed (the book pins >=3.8)"
    assert result.fix == 'python -m pip install "matplotlib>=3.8"'


@pytest.mark.parametrize("version, status", [("3.5.0", "fail"), ("3.14.0", "warn")])
def test_a_wrong_keras_fails_below_what_sdlib_needs_and_warns_off_the_pin(versions, version,
                                                                          status):
    versions["keras"] = version
    result = by_name(environment.check_packages(Context()))["keras"]
    assert result.status == status
    assert result.fix == 'python -m pip install "keras==3.15.1"'
    if status == "fail":
        assert "sdlib needs >=3.8" in result.detail


def test_in_a_notebook_the_fix_is_a_cell(versions):
    versions["keras"] = "3.14.0"
    result = by_name(environment.check_packages(Context(in_notebook=True)))["keras"]
    assert result.fix == '%pip install "keras==3.15.1"'


def test_colab_keeps_its_own_builds_and_needs_no_jupyterlab(versions):
    versions.update(tensorflow="2.19.0", jupyterlab=None)
    results = by_name(environment.check_packages(Context(platform="colab")))
    assert results["tensorflow"].status == "ok"
    assert "Colab's own" in results["tensorflow"].detail
    assert "jupyterlab" not in results


def test_only_the_active_backend_must_be_installed(versions, monkeypatch):
    versions["jax"] = None
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    assert by_name(environment.check_packages(Context()))["jax"].status == "ok"
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    result = by_name(environment.check_packages(Context()))["jax"]
    assert result.status == "fail"
    assert result.fix == 'python -m pip install "jax[cpu]==0.10.2"'


def test_jupyterlab_missing_locally_warns(versions):
    versions["jupyterlab"] = None
    result = by_name(environment.check_packages(Context()))["jupyterlab"]
    assert (result.status, result.fix) == ("warn", 'python -m pip install "jupyterlab>=4.2,<5"')


def test_an_old_python_fails(monkeypatch):
    monkeypatch.setattr(environment, "sys", types.SimpleNamespace(
        version_info=(3, 9, 18), executable="python3.9", modules=sys.modules))
    result = environment.check_python(Context())
    assert result.status == "fail"
    assert result.fix == environment.BOOK_INSTALL


def test_the_backend_imports_and_runs():
    result = environment.check_backend(Context())
    assert result.status == "ok"
    assert result.detail.startswith(f"{keras.backend.backend()} ")


# === Where it runs, the device ===
@pytest.mark.parametrize("variable, expected", [
    ("COLAB_RELEASE_TAG", "colab"), ("KAGGLE_KERNEL_RUN_TYPE", "kaggle"), (None, "local")])
def test_colab_kaggle_or_local(monkeypatch, variable, expected):
    for name in ("COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if variable:
        monkeypatch.setenv(variable, "1")
    assert environment.detect_platform() == expected


@pytest.fixture()
def no_gpu(monkeypatch):
    monkeypatch.setattr(device, "describe", lambda: CPU)
    monkeypatch.setattr(machine, "nvidia_gpu_names", lambda: [])


def test_no_gpu_is_fine_unless_one_was_asked_for(no_gpu):
    assert machine.check_gpu(Context()).status == "ok"
    result = machine.check_gpu(Context(require_gpu=True, platform="colab"))
    assert result.status == "fail"
    assert result.fix == "Runtime > Change runtime type > T4 GPU, then run the doctor again"
    assert machine.check_gpu(Context(require_gpu=True)).fix == machine.GPU_RUNTIME["local"]


def test_the_environment_variable_asks_for_a_gpu(no_gpu, monkeypatch):
    monkeypatch.setenv(doctor.REQUIRE_GPU_ENV, "1")
    report = doctor.run(checks=(machine.check_gpu,), echo=None)
    assert [result.status for result in report.checks] == ["fail"]
    assert report.exit_code == 1


def test_a_gpu_the_backend_cannot_see_needs_the_cuda_build(no_gpu, monkeypatch):
    monkeypatch.setattr(machine, "nvidia_gpu_names", lambda: ["Tesla T4"])
    result = machine.check_gpu(Context())
    assert result.status == "warn"
    assert result.fix == 'python -m pip install "tensorflow[and-cuda]==2.21.0"'
    assert machine.check_gpu(Context(require_gpu=True)).status == "fail"


def test_a_visible_gpu_is_named_with_its_memory(monkeypatch):
    gpu = device.DeviceInfo(backend="jax", kind="gpu", name="NVIDIA H200", memory_gb=139.8,
                            cpu_model="x", cpu_cores=16, cpu_bf16=None)
    monkeypatch.setattr(device, "describe", lambda: gpu)
    result = machine.check_gpu(Context(require_gpu=True))
    assert (result.status, result.detail) == ("ok", "NVIDIA H200, 140 GB (GPU, jax)")


def test_little_free_ram_warns(monkeypatch):
    monkeypatch.setattr(machine, "memory_gb", lambda: (8.0, 1.0))
    result = machine.check_memory(Context())
    assert result.status == "warn"
    assert result.fix == "close other programs and notebooks, then python -m sdlib doctor"


def test_a_full_disk_fails(monkeypatch):
    monkeypatch.setattr(machine.shutil, "disk_usage",
                        lambda path: types.SimpleNamespace(free=0.5 * 2**30))
    result = machine.check_disk(Context())
    assert (result.status, result.fix) == ("fail", "python -m pip cache purge")


# === An unwritable cache ===
@pytest.fixture()
def clean_cache_env(monkeypatch):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("variable", ["HF_HOME", "HF_HUB_CACHE"])
def test_a_cache_that_cannot_be_made_fails_with_the_variable_to_move_it(tmp_path, monkeypatch,
                                                                        clean_cache_env, variable):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    monkeypatch.setenv(variable, str(in_the_way / "cache"))
    result = machine.check_cache(Context())
    assert result.status == "fail"
    assert "is a file, not a folder" in result.detail
    assert result.fix == f"export {variable}=~/hf-cache"
    assert machine.check_cache(Context(in_notebook=True)).fix == f"%env {variable}=~/hf-cache"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_read_only_cache_fails_with_chmod(tmp_path, monkeypatch, clean_cache_env):
    cache = tmp_path / "hf"
    cache.mkdir(mode=0o500)
    monkeypatch.setenv("HF_HOME", str(cache))
    try:
        result = machine.check_cache(Context())
    finally:
        cache.chmod(0o700)
    assert result.status == "fail"
    assert result.fix == f"chmod u+w {cache}"


def test_a_cache_of_another_user_is_taken_back(tmp_path, monkeypatch):
    monkeypatch.setattr(machine.os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    fix = machine.folder_fix(Context(), str(tmp_path / "hub"), "HF_HOME", "~/hf-cache")
    assert fix == f'sudo chown -R "$USER" {tmp_path}'


def test_a_writable_cache_is_ok(tmp_path, monkeypatch, clean_cache_env):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "not-yet-made"))
    result = machine.check_cache(Context())
    assert result.status == "ok"
    assert result.data["hub_cache"] == str(tmp_path / "not-yet-made" / "hub")
    assert not (tmp_path / "not-yet-made").exists()  # checked, not created


# === Real weights: never required, never the network in a test ===
@pytest.fixture()
def no_hub_call(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the test reached for the network")

    monkeypatch.setattr(environment, "hub_answers", refuse)
    for name in ("SDLIB_SD15_WEIGHTS", "SDLIB_SD15_INPAINTING_WEIGHTS", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def with_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.ModuleType("huggingface_hub"))


def test_without_huggingface_hub_the_weights_are_not_reachable_which_is_fine(no_hub_call,
                                                                             monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    result = environment.check_real_weights(Context())
    assert result.status == "ok"  # never required: the chapters run mini-shapes
    assert result.detail.startswith("not reachable here, and not required")
    assert '`python -m pip install "huggingface_hub>=0.25"`' in result.detail
    assert result.data["how_to_get"] == 'python -m pip install "huggingface_hub>=0.25"'


def test_a_silent_hub_is_not_a_problem_and_says_how_to_copy_the_weights(no_hub_call, with_hub,
                                                                        monkeypatch):
    monkeypatch.setattr(environment, "hub_answers", lambda: False)
    result = environment.check_real_weights(Context())
    assert result.status == "ok" and result.data["source"] is None
    assert result.detail.startswith("not reachable here, and not required")
    assert "`export SDLIB_SD15_WEIGHTS=/path/to/stable-diffusion-v1-5`" in result.detail
    monkeypatch.setattr(environment, "hub_answers", lambda: True)
    assert environment.check_real_weights(Context()).data["source"] == "hub"


def test_offline_mode_is_not_asked(no_hub_call, with_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = environment.check_real_weights(Context())
    assert result.status == "ok" and "HF_HUB_OFFLINE" in result.detail


def test_weights_on_disk_are_found_and_a_wrong_path_is_named(no_hub_call, tmp_path, monkeypatch):
    monkeypatch.setenv("SDLIB_SD15_WEIGHTS", str(tmp_path))
    assert environment.check_real_weights(Context()).status == "ok"
    monkeypatch.setenv("SDLIB_SD15_INPAINTING_WEIGHTS", str(tmp_path / "missing"))
    result = environment.check_real_weights(Context())
    assert result.status == "warn"
    assert result.fix == "export SDLIB_SD15_INPAINTING_WEIGHTS=/path/to/stable-diffusion-inpainting"


def test_hub_answers_says_no_instead_of_raising():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    assert environment.hub_answers(("127.0.0.1", port), timeout=1.0) is False


# === The models ===
def test_auto_mode_names_the_measurement_behind_it(monkeypatch):
    monkeypatch.setattr(device, "gpu_visible", lambda: True)
    results = by_name(models.check_auto_mode(Context()))
    assert results["auto (mini-shapes)"].detail.startswith("XLA + mixed precision")
    assert results["auto (sd-v1-5)"].data["evidence"] == device.FASTEST_MODES[0].evidence


def test_the_shipped_files_are_complete():
    result = models.check_shipped_files(Context())
    assert result.status == "ok"
    assert models.JUDGE_WEIGHTS == judge.DEFAULT_WEIGHTS
    assert len(result.data["files"]) == 6  # model, inpainting UNet, judge, 2 LoRAs, 1 word


def test_a_truncated_shipped_file_fails_with_the_restore_command(tmp_path, monkeypatch):
    truncated = tmp_path / "judge.safetensors"
    truncated.write_bytes(judge.DEFAULT_WEIGHTS.read_bytes()[:1000])
    monkeypatch.setattr(models, "shipped_files", lambda: {"the judge": truncated})
    result = models.check_shipped_files(Context())
    assert result.status == "fail" and "truncated" in result.detail
    assert result.fix == f"git -C {ROOT} checkout -- sdlib/assets"


def test_an_unreadable_shipped_file_fails_with_chmod(tmp_path, monkeypatch):
    def refuse(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(models, "read_header", refuse)
    result = models.check_shipped_files(Context())
    path = next(iter(models.shipped_files().values()))
    assert result.status == "fail"
    assert result.fix == f"chmod a+r {path}"


def test_a_model_that_does_not_load_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(StableDiffusion, "from_preset", broken)
    context = Context()
    result = models.check_mini_shapes_loads(context)
    assert result.status == "fail" and "disk on fire" in result.detail
    assert context.mini_shapes is None
    assert models.check_image_time(context).status == "warn"
    assert models.check_chapter_times(context).status == "warn"


class FakePipeline:
    img_height = img_width = 64

    def __init__(self, traces=1):
        self.trace_counts = {"encode": traces, "decode": 1, "step": traces, "loop": 0}

    def text_to_image(self, prompt, **kwargs):
        return None


def test_a_retrace_fails_with_the_book_pins():
    result = models.check_compiles_once(Context(mini_shapes=FakePipeline(traces=2)))
    assert result.status == "fail"
    assert result.fix == 'python -m pip install "keras==3.15.1" "tensorflow==2.21.0"'


def test_the_image_time_feeds_the_estimate():
    context = Context(mini_shapes=FakePipeline())
    assert models.check_image_time(context).status == "ok"
    assert context.image_seconds is not None and context.image_seconds < 1


@pytest.mark.parametrize("factor, status", [(2.0, "ok"), (4.0, "warn")])
def test_chapter_times_scale_with_the_image_time(monkeypatch, factor, status):
    monkeypatch.delenv("SDLIB_CI", raising=False)
    context = Context(image_seconds=factor * models.REFERENCE_IMAGE_SECONDS)
    result = models.check_chapter_times(context)
    assert result.status == status
    assert result.data["estimates_s"] == pytest.approx(
        {chapter: factor * seconds for chapter, seconds in models.CHAPTER_SECONDS.items()})
    if status == "warn":
        assert result.fix == "export SDLIB_CI=1"


def test_every_chapter_has_a_reference_time():
    chapters = {int(path.name[:2]) for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert set(models.CHAPTER_SECONDS) == chapters


def test_a_real_two_step_run_compiles_once():
    """The one real run: tiny (mini-shapes is not loaded in this context), auto mode."""
    result = models.check_compiles_once(Context())
    assert result.status == "ok", result.detail
    assert result.detail.startswith("tiny")
    counts = result.data["trace_counts"]
    assert counts["encode"] == counts["step"] == counts["decode"] == 1
    assert max(counts.values()) == 1


# === The report: lines, exit status, --json, sdlib.doctor() ===
def fine(context):
    return ok("fine", "all good")


def doubtful(context):
    return [warn("doubtful", "a version differs", "python -m pip install x"), ok("other", "yes")]


def broken(context):
    return fail("broken", "it is broken", "python -m pip install y")


def crashing(context):
    raise RuntimeError("boom")


def test_warn_and_fail_need_a_fix():
    with pytest.raises(ValueError, match="needs a fix"):
        Result("x", "warn", "no fix")
    with pytest.raises(ValueError, match="status"):
        Result("x", "maybe", "?", "fix")


def test_one_aligned_line_per_check_and_the_fix_under_it():
    lines = doctor.format_result(warn("keras", "3.14.0", 'python -m pip install "keras==3.15.1"'))
    first, second = lines.splitlines()
    assert first == f"warn  {'keras':<{doctor.NAME_WIDTH}}  3.14.0"
    assert second == f"{'':<{6 + doctor.NAME_WIDTH}}  fix: python -m pip install \"keras==3.15.1\""


def test_a_crashing_check_is_a_failure_not_a_crash():
    report = doctor.run(checks=(crashing, fine), echo=None)
    crashed = report.checks[0]
    assert (crashed.name, crashed.status) == ("crashing", "fail")
    assert "RuntimeError: boom" in crashed.detail
    assert crashed.fix.startswith("python -m sdlib doctor --json > doctor.json")
    assert report.checks[1].status == "ok"


@pytest.mark.parametrize("checks, code, verdict", [
    ((fine,), 0, "ready"), ((fine, doubtful), 1, "ready, with warnings"),
    ((fine, doubtful, broken), 1, "not ready")])
def test_the_exit_status_is_0_only_when_every_check_is_ok(monkeypatch, capsys, checks, code,
                                                          verdict):
    monkeypatch.setattr(doctor, "CHECKS", checks)
    assert main(["doctor"]) == code
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.split(": ", 1)[1].startswith(verdict)


def test_json_parses_and_stdout_holds_only_json(monkeypatch, capsys):
    def noisy(context):
        print("a chatty library")
        return ok("noisy", "fine")

    monkeypatch.setattr(doctor, "CHECKS", (noisy, doubtful, broken))
    assert main(["doctor", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [check["status"] for check in report["checks"]] == ["ok", "warn", "ok", "fail"]
    assert report["checks"][1]["fix"] == "python -m pip install x"
    summary = report["summary"]
    assert summary["counts"] == {"ok": 2, "warn": 1, "fail": 1}
    assert summary["exit_code"] == 1 and summary["seconds"] >= 0
    assert {"platform", "cpu", "cpu_cores", "gpu", "ram_gb", "backend"} <= set(summary["machine"])


def test_the_gpu_flag_asks_for_a_gpu(monkeypatch, no_gpu, capsys):
    monkeypatch.delenv(doctor.REQUIRE_GPU_ENV, raising=False)
    monkeypatch.setattr(doctor, "CHECKS", (machine.check_gpu,))
    assert main(["doctor"]) == 0
    assert main(["doctor", "--gpu"]) == 1


def test_sdlib_doctor_runs_in_a_cell(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "CHECKS", (fine, doubtful))
    report = sdlib.doctor()
    assert isinstance(report, doctor.Report)
    assert [result.name for result in report.checks] == ["fine", "doubtful", "other"]
    assert "warn  doubtful" in capsys.readouterr().out
    assert repr(report).startswith("<sdlib doctor: 2 ok, 1 warn, 0 fail")


def test_the_help_says_what_the_exit_status_means(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["doctor", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 when every check is ok; 1 when one fails" in help_text
    assert "or warns" in help_text
    assert "--json" in help_text and "--gpu" in help_text
