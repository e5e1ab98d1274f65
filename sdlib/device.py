"""The one place that knows the device: what it is, the dtype policies that suit it, what "auto" is.

``StableDiffusion``'s defaults ``jit_compile="auto"`` and ``dtype="auto"`` resolve here, once and
before any weight exists, into a :class:`Mode`: the mode of the keras.io guide (Standard, Mixed
precision, XLA, XLA + mixed precision; "High-performance image generation using Stable Diffusion in
KerasCV", Chollet et al. 2022) that was measured fastest for a model of that size on that kind of
device. The measurements are data (:data:`FASTEST_MODES`), each row citing where its numbers come
from.
"""

import dataclasses
import functools
import os
import platform
import shutil
import subprocess

import keras

from sdlib import validation


# === What the device is ===
@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    backend: str  # the Keras backend: "tensorflow", "jax" or "torch"
    kind: str  # "cpu", "gpu" or "tpu": where the backend runs the models
    name: str  # the accelerator's name, else the CPU model
    memory_gb: float | None  # the accelerator's memory, where the backend says
    cpu_model: str
    cpu_cores: int
    cpu_bf16: bool | None  # bfloat16 instructions (AVX512_BF16, AMX, Arm BF16); None: unknown

    def description(self) -> str:
        """One line, as chapters and benchmark archives print it."""
        if self.kind != "cpu":
            memory = f", {self.memory_gb:.0f} GB" if self.memory_gb else ""
            return f"{self.kind.upper()}: {self.name}{memory} ({self.backend})"
        bf16 = {True: ", bfloat16 instructions", False: ", no bfloat16 instructions",
                None: ""}[self.cpu_bf16]
        return f"CPU: {self.cpu_model}, {self.cpu_cores} cores{bf16} ({self.backend})"


def describe() -> DeviceInfo:
    """What the active Keras backend runs on."""
    backend = keras.backend.backend()
    cpu_model, cpu_flags = _cpu()
    accelerator = _accelerator(backend)
    kind, name, memory = accelerator if accelerator else ("cpu", cpu_model, None)
    bf16 = None if cpu_flags is None else bool({"avx512_bf16", "amx_bf16", "bf16"} & cpu_flags)
    return DeviceInfo(backend=backend, kind=kind, name=name, memory_gb=memory, cpu_model=cpu_model,
                      cpu_cores=os.cpu_count() or 1, cpu_bf16=bf16)


def gpu_visible() -> bool:
    """True when the active Keras backend runs on a GPU."""
    accelerator = _accelerator(keras.backend.backend())
    return accelerator is not None and accelerator[0] == "gpu"


@functools.lru_cache(maxsize=1)
def _cpu():
    """(model name, instruction-set flags or None where the OS does not say)."""
    model, flags = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in (platform.processor(), platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features") and flags is None:  # x86, Arm
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def _accelerator(backend):
    """(kind, name, memory in GB or None) of the backend's first accelerator, or None on a CPU."""
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return "gpu", details.get("device_name", gpus[0].name), _nvidia_memory_gb()
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            stats = device.memory_stats() or {}
            memory = stats.get("bytes_limit")
            return device.platform, device.device_kind, memory / 2**30 if memory else None
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            return "gpu", properties.name, properties.total_memory / 2**30
    return None


def _nvidia_memory_gb():
    """TensorFlow names a GPU but not its memory; nvidia-smi does, where it is installed."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        command = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.splitlines()[0]) / 1024  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


# === Dtype policies that suit it ===
def mixed_policy():
    """float16 where tensor cores make it fast (GPU); bfloat16 elsewhere: CPUs have native bf16
    (AVX512_BF16, AMX) while their float16 is emulated and slow."""
    return "mixed_float16" if gpu_visible() else "mixed_bfloat16"


def inference_policy():
    """``mixed_policy``'s 16-bit type for weights too. Inference has no optimizer whose small
    updates float32 weights must keep, so storing them in 16 bits loses nothing the 16-bit compute
    had not already rounded away, halves their memory and saves casting every weight on every call
    (1.5x faster UNet steps in TensorFlow on a CPU). The VAE stays float32 under float16."""
    return mixed_policy().removeprefix("mixed_")


# === Modes, and what "auto" picks ===
@dataclasses.dataclass(frozen=True)
class Mode:
    """How the pipeline runs: with XLA or not, and the Keras dtype policy of its weights."""

    jit_compile: bool
    dtype: str = "float32"

    @property
    def label(self) -> str:
        """The keras.io guide's name for this mode."""
        half = self.dtype != "float32"
        if self.jit_compile:
            return "XLA + mixed precision" if half else "XLA"
        return "Mixed precision" if half else "Standard"

    def kwargs(self) -> dict:
        """The mode as ``StableDiffusion.from_preset`` / ``from_pretrained`` keyword arguments."""
        return {"jit_compile": self.jit_compile, "dtype": self.dtype}


def guide_modes() -> dict:
    """The guide's four modes, in its order, by label. Its "mixed precision" is 16-bit weights here
    too (``inference_policy``): the fast choice for generating images. jit_compile matters on
    TensorFlow; on JAX every mode compiles with XLA (``sdlib.backend``)."""
    half = inference_policy()
    modes = (Mode(False, "float32"), Mode(False, half), Mode(True, "float32"), Mode(True, half))
    return {mode.label: mode for mode in modes}


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One row of what was measured fastest: the first row that matches the device wins."""

    device: str  # "gpu" or "cpu"
    backend: str | None  # None: any backend
    unet: str  # "sd": Stable Diffusion-sized (>= 512 channels at its widest); "any"
    fastest: str  # a label of guide_modes()
    evidence: str


FASTEST_MODES = (
    Measurement("gpu", None, "any", "XLA + mixed precision",
                "the keras.io guide's fastest mode on a T4 and an A100; not yet measured with "
                "sdlib (benchmarks/gpu_benchmark.sh is ready for it)"),
    Measurement("cpu", "tensorflow", "sd", "Mixed precision",
                "512x512 guided UNet step, 2-core Zen 5: 2.73 s, against 4.80 s Standard, "
                "5.41 s XLA and 7.51 s XLA + mixed; XLA on a CPU does not use the bfloat16 "
                "matrix instructions (sdlib/book/results/peers-512-2026-11-27.json)"),
    Measurement("cpu", None, "any", "XLA",
                "mini-shapes (96 channels at most) is bound by per-op overhead, which XLA's fusion "
                "removes: XLA 1.66-1.72x Standard, mixed precision 1.05-1.06x (chapter 6); JAX "
                "always compiles with XLA and gains nothing from bfloat16 on a CPU"),
)
SD_SIZED_CHANNELS = 512  # only 96 and 1280 were measured; the switch lies between them


def _matches(row, on_gpu, backend, unet_config):
    sd_sized = max(unet_config.block_out_channels) >= SD_SIZED_CHANNELS
    return ((row.device == "gpu") == on_gpu and row.backend in (None, backend)
            and (row.unet == "any" or sd_sized))


def fastest_measurement(unet_config) -> Measurement:
    """The row of :data:`FASTEST_MODES` that applies to a UNet like ``unet_config`` here."""
    on_gpu, backend = gpu_visible(), keras.backend.backend()
    return next(row for row in FASTEST_MODES if _matches(row, on_gpu, backend, unet_config))


def fastest_mode(unet_config) -> Mode:
    """The mode measured fastest on this device for a UNet like ``unet_config``."""
    return guide_modes()[fastest_measurement(unet_config).fastest]


def resolve_mode(jit_compile, dtype, unet_config) -> Mode:
    """``jit_compile`` (True, False or "auto") and ``dtype`` (a policy name, None or "auto") as one
    Mode; what is "auto" comes from :func:`fastest_mode`, what is given is kept."""
    jit_compile = validation.check_jit_compile(jit_compile)
    dtype = validation.check_dtype(dtype)
    if "auto" in (jit_compile, dtype):
        fastest = fastest_mode(unet_config)
        jit_compile = fastest.jit_compile if jit_compile == "auto" else jit_compile
        dtype = fastest.dtype if dtype == "auto" else dtype
    return Mode(bool(jit_compile), dtype)
