"""Batch generation (``sdlib.batch``, ``python -m sdlib batch``): prompts files read with their
errors' lines, stable ids and seeds, images equal to a plain loop of ``text_to_image`` calls (in
this process and on two local Ray workers), resuming that skips what is done and redoes what is
half-written, and a run that survives a killed worker and a killed command."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlib.batch import MANIFEST, Batch, Job, ModelSpec, ray_engine, read_jobs, run_batch
from sdlib.batch.manifest import TEMPORARY_PREFIX
from sdlib.cli import build_parser, main
from sdlib.pipeline import StableDiffusion

MODEL = ModelSpec(preset="tiny", jit_compile=False)  # seeded random weights, no XLA: seconds
JOBS = [  # one group of four (batch_size 3 makes runs of 3 and 1 and pads the 1), two others
    {"prompt": "a red circle", "num_steps": 2},
    {"prompt": "a blue square", "num_steps": 2, "seed": 11},
    {"prompt": "a green triangle", "num_steps": 2, "negative_prompt": "blurry"},
    {"prompt": "a red circle", "num_steps": 2, "seed": 5},
    {"prompt": "a small blue square", "num_steps": 3, "guidance_scale": 4.0},
    {"prompt": "a big green circle", "num_steps": 2, "guidance_scale": 1.0, "seed": None},
]


def write_jobs(path, jobs):
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def manifest_lines(folder):
    return [json.loads(line) for line in (Path(folder) / MANIFEST).read_text().splitlines()]


def image(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def pipe():
    return StableDiffusion.from_preset("tiny", jit_compile=False)


@pytest.fixture(scope="module")
def expected(pipe):
    """A plain loop: one text_to_image call per job, with its seed (memoized by job id)."""
    made = {}

    def expected_image(job):
        if job.id not in made:
            made[job.id] = pipe.text_to_image(
                job.prompt, negative_prompt=job.negative_prompt, num_steps=job.num_steps,
                guidance_scale=job.guidance_scale, sampler=job.sampler, seed=job.seed,
                verbose=False)[0]
        return made[job.id]

    return expected_image


def assert_like_a_plain_loop(folder, jobs, expected):
    """Every job's image is in the folder, within 1 level of the plain loop's, and the manifest
    holds every job exactly once."""
    records = manifest_lines(folder)
    assert sorted(record["id"] for record in records) == sorted(job.id for job in jobs)
    for job in jobs:
        made = image(Path(folder) / job.file_name).astype(int)
        assert np.abs(made - expected(job).astype(int)).max() <= 1, job


# === Reading prompts files ===
def test_a_text_file_is_one_prompt_per_line_seeded_by_its_line_number(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\n\n  a blue square  \n")
    jobs = read_jobs(path)
    assert [(job.line, job.prompt, job.seed, job.seed_from) for job in jobs] == [
        (1, "a red circle", 1, "line number"), (3, "a blue square", 3, "line number")]
    assert (jobs[0].num_steps, jobs[0].guidance_scale, jobs[0].sampler,
            jobs[0].negative_prompt) == (50, 7.5, "ddim", None)  # text_to_image's defaults


def test_jsonl_keys_are_text_to_image_arguments(tmp_path):
    jobs = read_jobs(write_jobs(tmp_path / "prompts.jsonl", JOBS))
    assert [job.seed for job in jobs] == [1, 11, 3, 5, 5, 6]  # null or missing: the line number
    assert [job.seed_from for job in jobs][:2] == ["line number", "file"]
    assert jobs[2].negative_prompt == "blurry" and jobs[4].guidance_scale == 4.0
    assert jobs[4].num_steps == 3 and jobs[0].sampler == "ddim"


def test_a_first_line_that_starts_with_a_brace_makes_any_file_jsonl(tmp_path):
    jobs = read_jobs(write_jobs(tmp_path / "prompts.txt", JOBS[:2]))
    assert [job.prompt for job in jobs] == ["a red circle", "a blue square"]


def test_ids_and_file_names_are_stable_and_change_with_any_setting():
    job = Job(line=17, prompt="a red circle", negative_prompt=None, seed=17, num_steps=25,
              guidance_scale=7.5, sampler="ddim")
    again = Job(**job.to_dict())
    assert job.id == again.id and job.file_name == f"{job.id}.png"
    assert job.id.startswith("00017-") and len(job.id) == len("00017-") + 8
    for change in ({"prompt": "a red square"}, {"seed": 18}, {"num_steps": 26},
                   {"guidance_scale": 7.0}, {"sampler": "euler"}, {"negative_prompt": "x"}):
        assert Job(**{**job.to_dict(), **change}).id != job.id, change


@pytest.mark.parametrize("text, message", [
    ("", "holds no prompts"),
    ("\n  \n", "holds no prompts"),
    ('{"prompt": "a"}\n{"prompt": "b",\n', "line 2: not valid JSON"),
    ('{"prompt": "a"}\n["b"]\n', "line 2: a JSON object expected"),
    ('{"prompt": "a", "steps": 2, "cfg": 1}\n', "line 1: unknown keys 'steps', 'cfg'; the keys "
     "are text_to_image's argument names: prompt, negative_prompt, seed, num_steps, "
     "guidance_scale, sampler"),
    ('{"prompt": "a"}\n\n{"seed": 3}\n', "line 3: no prompt"),
    ('{"prompt": "a", "seed": -1}\n', "line 1: seed must be a non-negative int"),
    ('{"prompt": "a", "seed": 1.5}\n', "line 1: seed must be an int"),
    ('{"prompt": "a", "num_steps": 0}\n', "line 1: num_steps must be between 1"),
    ('{"prompt": "a", "guidance_scale": "high"}\n', "line 1: guidance_scale must be a number"),
    ('{"prompt": "a", "sampler": "plms"}\n', "line 1: unknown sampler 'plms'; choose one of"),
    ('{"prompt": "a", "negative_prompt": 3}\n', "line 1: negative_prompt must be a string"),
])
def test_bad_prompts_files_are_refused_with_the_line(tmp_path, text, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        read_jobs(path)
    assert message in str(error.value)


def test_a_missing_prompts_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="No prompts file at .*nothing.txt"):
        read_jobs(tmp_path / "nothing.txt")


def test_steps_a_sampler_cannot_run_are_refused_before_any_work(tmp_path):
    path = write_jobs(tmp_path / "prompts.jsonl", [{"prompt": "a", "sampler": "lcm",
                                                    "num_steps": 60}])
    with pytest.raises(ValueError, match="line 1: sampler 'lcm' runs at most 50 steps"):
        Batch(path, tmp_path / "out", MODEL)


# === The command line, before any work ===
@pytest.fixture()
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(StableDiffusion, "from_preset", refuse)
    monkeypatch.setattr(StableDiffusion, "from_pretrained", refuse)


@pytest.mark.parametrize("case, message", [
    ("missing", "No prompts file at"),
    ("unknown key", "line 2: unknown key 'cfg'; the keys are text_to_image's argument names"),
    ("out is a file", "is a file; give a folder"),
    ("out's folder is missing", "No folder"),
])
def test_the_command_refuses_bad_input_before_loading_a_model(tmp_path, capsys, no_model, case,
                                                              message):
    prompts = write_jobs(tmp_path / "prompts.jsonl", [{"prompt": "a"}, {"prompt": "b", "cfg": 1}]
                         if case == "unknown key" else [{"prompt": "a"}])
    out = tmp_path / "out"
    if case == "missing":
        prompts = tmp_path / "nothing.jsonl"
    elif case == "out is a file":
        out.write_text("")
    elif case == "out's folder is missing":
        out = tmp_path / "no" / "out"
    status = main(["batch", str(prompts), "--out", str(out), "--preset", "tiny"])
    assert status == 2
    assert message in capsys.readouterr().err
    assert case == "out is a file" or not out.exists()


def test_without_ray_a_cluster_is_refused_and_workers_become_this_process(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setattr("sdlib.cli.batch.ray_available", lambda: False)
    prompts = write_jobs(tmp_path / "prompts.jsonl", [{"prompt": "a", "num_steps": 2}])
    args = ["batch", str(prompts), "--preset", "tiny", "--no-jit"]
    assert main([*args, "--out", str(tmp_path / "a"), "--address", "auto"]) == 2
    assert 'pip install "sdlib[ray]"' in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert 'Ray Data is not installed (pip install "sdlib[ray]")' in captured.err
    assert "in this process" in captured.out and len(manifest_lines(tmp_path / "b")) == 1


def test_every_batch_option_has_help_and_its_default(capsys):
    subparser = build_parser()._subparsers._group_actions[0].choices["batch"]
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    description, options = capsys.readouterr().out.split("options:\n", 1)
    assert "gets its line number (1-based) as its seed" in " ".join(description.split())
    entries, current = {}, None
    for line in options.splitlines():
        if line.startswith("  ") and line[2] != " ":  # a new option; deeper lines continue one
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current:
            entries[current] += " " + line
    for action in subparser._actions:
        if action.option_strings and action.dest != "help":
            entry = " ".join(entries[action.option_strings[0]].split())
            assert action.help and ("(default: " in entry or "(required)" in entry), entry


# === Making images in this process ===
def test_a_batch_equals_a_plain_loop_of_text_to_image(tmp_path, pipe, expected):
    prompts = write_jobs(tmp_path / "prompts.jsonl", JOBS)
    summary = run_batch(prompts, tmp_path / "out", MODEL, batch_size=3, pipe=pipe)
    jobs = read_jobs(prompts)
    assert (summary.made, summary.skipped, summary.missing) == (6, 0, 0)
    assert_like_a_plain_loop(tmp_path / "out", jobs, expected)
    record = next(record for record in manifest_lines(tmp_path / "out") if record["line"] == 2)
    assert {key: record[key] for key in ("prompt", "seed", "seed_from", "num_steps",
                                         "guidance_scale", "sampler", "model", "height")} == {
        "prompt": "a blue square", "seed": 11, "seed_from": "file", "num_steps": 2,
        "guidance_scale": 7.5, "sampler": "ddim", "model": "tiny", "height": 64}
    assert {"weights_sha256", "sdlib_version", "file", "seconds", "worker"} <= set(record)
    assert not [name for name in os.listdir(tmp_path / "out") if name.startswith(TEMPORARY_PREFIX)]


def test_mini_shapes_records_the_sha256_of_its_weights():
    identity = ModelSpec().identity()
    assert identity["model"] == "mini-shapes" and len(identity["weights_sha256"]) == 64
    assert (identity["height"], identity["width"]) == (64, 64)


def test_a_rerun_makes_nothing_when_all_is_done(tmp_path, pipe):
    prompts = write_jobs(tmp_path / "prompts.jsonl", JOBS[:3])
    run_batch(prompts, tmp_path / "out", MODEL, pipe=pipe)
    before = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "out").iterdir()}

    def made(*args):
        raise AssertionError("a done image was made again")

    summary = run_batch(prompts, tmp_path / "out", MODEL, pipe=object(), on_image=made)
    assert (summary.made, summary.skipped) == (0, 3)
    after = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "out").iterdir()}
    assert after == before


def test_a_rerun_redoes_what_a_killed_run_left_half_written(tmp_path, pipe, expected):
    prompts, out = write_jobs(tmp_path / "prompts.jsonl", JOBS), tmp_path / "out"
    run_batch(prompts, out, MODEL, pipe=pipe)
    jobs = {job.line: job for job in read_jobs(prompts)}
    (out / jobs[1].file_name).unlink()  # image gone: its record no longer counts
    (out / jobs[2].file_name).write_bytes(b"\x89PNG")  # torn image
    (out / f"{TEMPORARY_PREFIX}abc.part").write_bytes(b"half")  # killed while writing one
    records = manifest_lines(out)
    last = next(record for record in records if record["line"] == 6)
    kept = [record for record in records if record["line"] != 6]
    with open(out / MANIFEST, "w") as stream:  # line 6's record torn in half as it was written
        stream.write("".join(json.dumps(record) + "\n" for record in kept))
        stream.write(json.dumps(last)[:40])
    made = []
    summary = run_batch(prompts, out, MODEL, pipe=pipe,
                        on_image=lambda record, *_: made.append(record["line"]))
    assert sorted(made) == [1, 2, 6] and summary.skipped == 3
    assert_like_a_plain_loop(out, list(jobs.values()), expected)
    assert not list(out.glob(f"{TEMPORARY_PREFIX}*"))


def test_a_folder_of_another_models_images_is_refused(tmp_path, pipe):
    prompts, out = write_jobs(tmp_path / "prompts.jsonl", JOBS[:1]), tmp_path / "out"
    run_batch(prompts, out, MODEL, pipe=pipe)
    with pytest.raises(ValueError, match="holds images of another model"):
        Batch(prompts, out, ModelSpec(preset="mini-shapes")).__enter__()


def test_one_run_at_a_time_writes_into_a_folder(tmp_path):
    prompts, out = write_jobs(tmp_path / "prompts.jsonl", JOBS[:1]), tmp_path / "out"
    out.mkdir()
    with Batch(prompts, out, MODEL), pytest.raises(BlockingIOError, match="Another sdlib"):
        with Batch(prompts, out, MODEL):
            pass


# === Ray workers ===
def descendants(pid):
    """The processes below ``pid`` (Linux /proc), deepest last."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def command_name(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return "?"


def wait_until_gone(pids, seconds, lingering=()):
    """The names of the processes still alive after waiting (not for those named in
    ``lingering``); those are killed (the test started them)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(pid) and command_name(pid) not in lingering
                                              for pid in pids):
        time.sleep(0.2)
    left = [pid for pid in pids if alive(pid)]
    names = [command_name(pid) for pid in left]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return names


RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


@pytest.fixture()
def local_ray():
    """Ray on this machine only (2 CPUs, no dashboard), and no Ray process left after."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    temp_dir = tempfile.mkdtemp(prefix="sdray", dir="/tmp")  # short: Ray's socket paths
    ray_engine.start_ray(ray, num_cpus=2, _temp_dir=temp_dir)
    try:
        yield ray
    finally:
        started = descendants(os.getpid())
        ray.shutdown()
        left = wait_until_gone(started, 30)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert left == [], "Ray processes outlived ray.shutdown()"


@pytest.mark.slow
def test_two_ray_workers_equal_a_plain_loop_and_a_killed_worker_loses_nothing(
        tmp_path, local_ray, expected):
    assert local_ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"  # this machine only
    prompts, out = write_jobs(tmp_path / "prompts.jsonl", JOBS), tmp_path / "out"
    killed = []

    def kill_the_first_worker(record, made, to_make):
        if not killed:
            killed.append(int(record["worker"].rsplit(":", 1)[1]))
            os.kill(killed[0], signal.SIGKILL)

    summary = run_batch(prompts, out, MODEL, workers=2, batch_size=1,
                        on_image=kill_the_first_worker)
    assert (summary.made, summary.missing) == (6, 0)
    assert_like_a_plain_loop(out, read_jobs(prompts), expected)
    workers = {record["worker"] for record in manifest_lines(out)}
    assert len(workers) >= 2


@pytest.mark.slow
def test_a_killed_batch_command_resumes_without_losing_or_repeating_a_job(tmp_path, pipe,
                                                                         expected):
    pytest.importorskip("ray.data")
    jobs = [{"prompt": f"a {color} {shape}", "num_steps": 40}
            for color in ("red", "green", "blue") for shape in ("circle", "square", "triangle")]
    prompts, out = write_jobs(tmp_path / "prompts.jsonl", jobs), tmp_path / "out"
    temp_dir = tempfile.mkdtemp(prefix="sdray", dir="/tmp")
    command = [sys.executable, "-m", "sdlib", "batch", str(prompts), "--out", str(out),
               "--workers", "2", "--batch-size", "1", "--preset", "tiny", "--no-jit"]
    env = {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    started = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            manifest = out / MANIFEST
            if manifest.exists() and manifest.read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
        started = descendants(driver.pid)
        assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        left = wait_until_gone(started, 30, lingering=RAY_AGENTS)
        shutil.rmtree(temp_dir, ignore_errors=True)
    # The cluster dies with its driver: Ray's servers and workers. Ray's two agents notice that
    # their raylet is gone, but linger a minute or more before they exit (Ray 2.60); they were
    # killed above.
    assert set(left) <= set(RAY_AGENTS), left
    made_before = (out / MANIFEST).read_text().count("\n")  # a torn last line has none
    assert 2 <= made_before < len(jobs)

    summary = run_batch(prompts, out, MODEL, pipe=pipe)
    assert summary.skipped == made_before and summary.made == len(jobs) - made_before
    assert_like_a_plain_loop(out, read_jobs(prompts), expected)
