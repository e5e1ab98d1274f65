"""What every chapter notebook calls first: pick the model and the sizes for where it runs.

``SDLIB_PRESET`` chooses the model (``sd-v1-5``, ``mini-shapes``, ``tiny``); unset, the real SD v1.5
runs where a GPU is present and its weights can be had, else the shipped ``mini-shapes`` model.
``SDLIB_CI=1`` shrinks step counts and batch sizes so the test suite runs every chapter in minutes.
"""

import dataclasses
import os
import platform


@dataclasses.dataclass
class ChapterSetup:
    preset: str
    ci: bool
    device: str
    num_steps: int
    img_size: int

    def steps(self, full):
        """``full`` steps for a reader, a handful under CI."""
        return min(full, 4) if self.ci else full

    def pipeline(self, **kwargs):
        import sdlib

        kwargs.setdefault("img_height", self.img_size)
        kwargs.setdefault("img_width", self.img_size)
        return sdlib.StableDiffusion.from_preset(self.preset, **kwargs)

    def is_real_sd(self):
        return self.preset == "sd-v1-5"


def device_description():
    """One line naming the accelerator (or CPU) the chapter runs on."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU: {details.get('device_name', gpus[0].name)} (TensorFlow)"
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.platform.upper()}: {device.device_kind} (JAX)"
    cores = os.cpu_count()
    return f"CPU: {platform.processor() or platform.machine()}, {cores} cores ({backend})"


def _real_weights_reachable():
    if os.environ.get("SDLIB_SD15_WEIGHTS"):
        return True
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return False
    return os.environ.get("HF_HUB_OFFLINE", "0") != "1"


def chapter_setup(verbose=True):
    ci = os.environ.get("SDLIB_CI", "0") == "1"
    device = device_description()
    preset = os.environ.get("SDLIB_PRESET")
    if not preset:
        on_gpu = not device.startswith("CPU")
        preset = "sd-v1-5" if on_gpu and _real_weights_reachable() else "mini-shapes"
    img_size = 512 if preset == "sd-v1-5" else 64
    setup = ChapterSetup(preset=preset, ci=ci, device=device, num_steps=4 if ci else 50,
                         img_size=img_size)
    if verbose:
        note = {"mini-shapes": "the shipped miniature model, offline",
                "tiny": "random toy weights: pictures are noise",
                "sd-v1-5": "real Stable Diffusion v1.5"}.get(preset, preset)
        print(f"model: {preset} ({note}); {device}" + ("; CI-sized run" if ci else ""))
    return setup
