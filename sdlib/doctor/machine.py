"""The doctor's checks of the machine: CPU, GPU (and, where one is asked for and missing, where to
get one), RAM, the folders that must take files (the hub's download cache, the temporary folder)
and the disk under them."""

import os
import shutil
import subprocess
import tempfile

from sdlib import device
from sdlib.doctor.environment import PACKAGES
from sdlib.doctor.result import fail, ok, warn

# === The machine ===
BF16 = {True: "bfloat16 instructions", False: "no bfloat16 instructions",
        None: "bfloat16 instructions unknown"}
MIN_AVAILABLE_RAM_GB = 2.0  # below it, other programs crowd the chapters out
MIN_FREE_DISK_GB = 1.0  # the chapters' images and temporary models
REAL_WEIGHTS_DISK_GB = 5.0  # SD v1.5's weights: about 2 GB in fp16, 4 GB in fp32
# Where a GPU can be had when none is visible, by platform.
GPU_RUNTIME = {
    "colab": "Runtime > Change runtime type > T4 GPU, then run the doctor again",
    "kaggle": "Settings > Accelerator > GPU T4 x2, then run the doctor again",
    "local": "no NVIDIA GPU here (nvidia-smi finds none): open the book in Colab and choose "
             "Runtime > Change runtime type > T4 GPU",
}
CUDA_EXTRAS = {"tensorflow": "and-cuda", "jax": "cuda12"}  # the pip extras of the GPU builds


def check_cpu(context):
    info = device.describe()
    return ok("cpu", f"{info.cpu_model}, {info.cpu_cores} cores, {BF16[info.cpu_bf16]}",
              model=info.cpu_model, cores=info.cpu_cores, bf16=info.cpu_bf16)


def check_gpu(context):
    info = device.describe()
    if info.kind != "cpu":
        memory = f", {info.memory_gb:.0f} GB" if info.memory_gb else ""
        return ok("gpu", f"{info.name}{memory} ({info.kind.upper()}, {info.backend})",
                  gpu=info.name, memory_gb=info.memory_gb, kind=info.kind)
    nvidia = nvidia_gpu_names()
    if nvidia:
        status = fail if context.require_gpu else warn
        return status("gpu", f"{nvidia[0]} is installed, but {info.backend} does not see it: the "
                      "chapters would run on the CPU", cuda_build_fix(context, info.backend),
                      gpu=None, nvidia_smi=nvidia)
    if context.require_gpu:
        return fail("gpu", "none, and a GPU was asked for (--gpu or $SDLIB_DOCTOR_REQUIRE_GPU=1)",
                    GPU_RUNTIME[context.platform], gpu=None)
    return ok("gpu", "none: the chapters run mini-shapes on the CPU", gpu=None)


def nvidia_gpu_names():
    """The GPUs NVIDIA's driver lists, whatever the backend sees; [] without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def cuda_build_fix(context, backend):
    package = next((package for package in PACKAGES if package.name == backend), None)
    if package is None or backend not in CUDA_EXTRAS:
        return f"install a CUDA build of {backend} (https://pytorch.org/get-started/locally/)"
    return context.pip_install(f"{backend}[{CUDA_EXTRAS[backend]}]{package.pinned}")


def memory_gb():
    """(total, available) RAM in GB, a container's limit included; available is None where the
    OS does not say."""
    total = available = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            fields = {key: int(value.split()[0]) / 2**20 for key, _, value  # kB -> GB
                      in (line.partition(":") for line in handle) if value.strip()}
        total, available = fields.get("MemTotal"), fields.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        except (ValueError, OSError, AttributeError):
            pass
    limit = _container_limit_gb()
    if limit is not None and total is not None and limit < total:
        total, available = limit, min(available or limit, limit)
    return total, available


def _container_limit_gb():
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="utf-8") as handle:
                return int(handle.read().strip()) / 2**30
        except (OSError, ValueError):  # absent, or "max": no limit
            continue
    return None


def check_memory(context):
    total, available = memory_gb()
    if total is None:
        return ok("ram", "unknown (the OS does not say)", total_gb=None, available_gb=None)
    detail = f"{total:.1f} GB" + (f", {available:.1f} GB available" if available else "")
    if available is not None and available < MIN_AVAILABLE_RAM_GB:
        return warn("ram", f"{detail}: under {MIN_AVAILABLE_RAM_GB:.0f} GB free, the chapters may "
                    "swap or be stopped", f"close other programs and notebooks, then "
                    f"{context.rerun()}", total_gb=total, available_gb=available)
    return ok("ram", detail, total_gb=total, available_gb=available)


# === Folders that must take files, and the disk under them ===
def hub_cache():
    """(folder, the variable that moves it): where huggingface_hub, and so sdlib.loading.hub,
    downloads to, as huggingface_hub reads it."""
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if hub:
        return os.path.expanduser(hub), "HF_HUB_CACHE"
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return os.path.join(os.path.expanduser(home), "hub"), "HF_HOME"


def nearest_existing(path):
    """``path``, or the nearest folder above it that exists (what would hold it once made)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def unwritable(folder):
    """None when files can be made in ``folder`` (or, not there yet, where it would be made);
    else why not."""
    existing = nearest_existing(folder)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"cannot create files in {existing} ({error.strerror or error})"
    return None


def folder_fix(context, folder, variable, elsewhere):
    """The command that makes ``folder`` take files: give it back to this user, or move what
    ``variable`` names to ``elsewhere``."""
    existing = nearest_existing(folder)
    if os.path.isdir(existing) and hasattr(os, "getuid"):
        if os.stat(existing).st_uid == os.getuid():
            return context.shell(f"chmod u+w {existing}")
        return context.shell(f'sudo chown -R "$USER" {existing}')
    return context.set_env(variable, elsewhere)


def check_cache(context):
    hub, variable = hub_cache()
    why = unwritable(hub)
    if why:
        return fail("cache", f"downloads cannot go to {hub}: {why}",
                    folder_fix(context, hub, variable, "~/hf-cache"), hub_cache=hub)
    try:
        temp = tempfile.gettempdir()  # chapters 7 and 9 save their models in a temporary folder
    except FileNotFoundError as error:
        return fail("cache", f"no temporary folder takes files ({error})",
                    context.set_env("TMPDIR", os.path.expanduser("~")), hub_cache=hub)
    why = unwritable(temp)
    if why:
        return fail("cache", f"the temporary folder {temp}: {why}",
                    folder_fix(context, temp, "TMPDIR", os.path.expanduser("~")), hub_cache=hub,
                    temp=temp)
    return ok("cache", f"downloads go to {hub}, temporary files to {temp}: both take files",
              hub_cache=hub, temp=temp)


def check_disk(context):
    hub, _ = hub_cache()
    where = nearest_existing(hub)
    free = shutil.disk_usage(where).free / 2**30
    detail = f"{free:.1f} GB free on the disk of {where}"
    fix = context.shell("python -m pip cache purge")  # pip's cache often holds a few GB
    if free < MIN_FREE_DISK_GB:
        return fail("disk", f"{detail}: under {MIN_FREE_DISK_GB:.0f} GB, the chapters cannot save "
                    "their images and models", fix, free_gb=free, path=where)
    if free < REAL_WEIGHTS_DISK_GB:
        return warn("disk", f"{detail}: enough for the mini models, not for SD v1.5's weights "
                    "(2-4 GB, never required)", fix, free_gb=free, path=where)
    return ok("disk", detail, free_gb=free, path=where)
