"""The doctor: is this machine ready for the book? ``python -m sdlib doctor`` (``--json`` for a
teacher who collects reports), or ``sdlib.doctor()`` in a notebook cell.

One line per check, ok / warn / fail, and under each warn or fail the command that fixes it.
The checks, in order: Python and the book's packages against its pins, the Keras backend, Colab /
Kaggle / local, the CPU, GPU, RAM, cache folders and disk, the mode "auto" picks and why, the
shipped files, mini-shapes loading, a 2-step run that compiles once, one timed image and each
chapter's time estimated from it, and whether SD v1.5's real weights can be had (never required).
About 30 s on two CPU cores, most of it compiling mini-shapes.

A fail means a chapter will not run as the book shows it; a warn, that something differs from how
the book was run (a version) while the chapters should still work. The exit status is 0 only when
every check is ok.
"""

import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import sys
import time
import types

from sdlib import device
from sdlib.doctor import environment, machine, models
from sdlib.doctor.result import STATUSES, Context, Result
from sdlib.native_logs import native_logs_hidden

CHECKS = (
    environment.check_python, environment.check_packages, environment.check_backend,
    environment.check_platform, machine.check_cpu, machine.check_gpu, machine.check_memory,
    machine.check_cache, machine.check_disk,
    models.check_auto_mode, models.check_shipped_files, models.check_mini_shapes_loads,
    models.check_compiles_once, models.check_image_time, models.check_chapter_times,
    environment.check_real_weights,
)
REQUIRE_GPU_ENV = "SDLIB_DOCTOR_REQUIRE_GPU"
NAME_WIDTH = 18  # the longest check name, "auto (mini-shapes)"


@dataclasses.dataclass
class Report:
    checks: list[Result]
    seconds: float
    machine: dict

    def counts(self) -> dict:
        return {status: sum(result.status == status for result in self.checks)
                for status in STATUSES}

    @property
    def exit_code(self) -> int:
        """0 only when every check is ok, else 1 (the verdict tells a fail from a warning)."""
        counts = self.counts()
        return 1 if counts["fail"] or counts["warn"] else 0

    def summary(self) -> str:
        counts = self.counts()
        verdict = ("not ready: fix each fail above, then run the doctor again" if counts["fail"]
                   else "ready, with warnings (the chapters should still run)"
                   if counts["warn"]
                   else "ready")
        return (f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail in "
                f"{self.seconds:.1f} s: {verdict}")

    def as_dict(self) -> dict:
        """What --json prints: every check, and a summary (time, counts, the machine)."""
        return {"checks": [result.as_dict() for result in self.checks],
                "summary": {"seconds": self.seconds, "counts": self.counts(),
                            "exit_code": self.exit_code, "verdict": self.summary(),
                            "machine": self.machine}}

    def __repr__(self):  # a notebook cell shows this under the printed lines
        return f"<sdlib doctor: {self.summary()}>"


def format_result(result) -> str:
    """One aligned line, and for a warn or fail the fix on the next."""
    line = f"{result.status:<4}  {result.name:<{NAME_WIDTH}}  {result.detail}"
    if result.fix:
        line += f"\n{'':4}  {'':<{NAME_WIDTH}}  fix: {result.fix}"
    return line


def run_check(check, context) -> list[Result]:
    """The check's results, timed; a check that crashes is a fail that names the error."""
    started = time.perf_counter()
    try:
        results = check(context)
    except Exception as error:  # the doctor reports whatever breaks; it must not die of it
        name = check.__name__.removeprefix("check_").replace("_", " ")
        fix = (f"{context.rerun()} --json > doctor.json, and send doctor.json to your teacher"
               if not context.in_notebook else "send this output to your teacher")
        results = Result(name, "fail", f"the check crashed ({type(error).__name__}: {error})",
                         fix)
    results = results if isinstance(results, list) else [results]
    for result in results:
        result.seconds = (time.perf_counter() - started) / len(results)
    return results


def describe_machine() -> dict:
    """Who ran the report, for a teacher's table."""
    info = device.describe()
    total_gb, _ = machine.memory_gb()
    try:
        version = importlib.metadata.version("sdlib")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        version = None
    return {"sdlib": version, "platform": environment.detect_platform(), "os": platform.platform(),
            "python": platform.python_version(), "backend": info.backend,
            "device": info.description(), "cpu": info.cpu_model, "cpu_cores": info.cpu_cores,
            "cpu_bf16": info.cpu_bf16, "gpu": None if info.kind == "cpu" else info.name,
            "gpu_memory_gb": info.memory_gb, "ram_gb": total_gb}


def run(require_gpu=None, in_notebook=False, checks=None, echo=print) -> Report:
    """Run ``checks`` (None: :data:`CHECKS`) in order; ``echo`` (print, or None for silence) gets
    each line as it comes.

    ``require_gpu``: no GPU is a fail; None reads ``$SDLIB_DOCTOR_REQUIRE_GPU`` ("1": required).
    ``in_notebook``: fixes written for a notebook cell (``%pip install``, ``%env``).
    """
    if require_gpu is None:
        require_gpu = os.environ.get(REQUIRE_GPU_ENV, "0") == "1"
    context = Context(require_gpu=require_gpu, in_notebook=in_notebook,
                      platform=environment.detect_platform())
    started = time.perf_counter()
    if echo:
        echo("sdlib doctor: is this machine ready for the book? (about 30 s)")
    results = []
    for check in CHECKS if checks is None else checks:
        for result in run_check(check, context):
            results.append(result)
            if echo:
                echo(format_result(result))
    report = Report(results, time.perf_counter() - started, describe_machine())
    if echo:
        echo(report.summary())
    return report


def doctor(require_gpu=None) -> Report:
    """Run every check and print the report: ``sdlib.doctor()`` in a notebook cell. Fixes are
    written for a notebook (``%pip install``) when run in one."""
    with native_logs_hidden():
        return run(require_gpu=require_gpu, in_notebook="ipykernel" in sys.modules)


def report_json(require_gpu=None) -> Report:
    """Run every check with nothing printed on stdout but what the caller prints (--json)."""
    with contextlib.redirect_stdout(sys.stderr):
        return run(require_gpu=require_gpu, echo=None)


class _CallableModule(types.ModuleType):
    """``sdlib.doctor`` is this module; calling it, ``sdlib.doctor()``, runs :func:`doctor`."""

    def __call__(self, require_gpu=None):
        return doctor(require_gpu=require_gpu)


sys.modules[__name__].__class__ = _CallableModule
