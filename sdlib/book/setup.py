"""What every chapter notebook calls first: pick the model and the sizes for where it runs.

``SDLIB_PRESET`` chooses the model (``sd-v1-5``, ``mini-shapes``, ``tiny``); unset, the real SD v1.5
runs where a GPU is present and its weights can be had, else the shipped ``mini-shapes`` model.
``SDLIB_CI=1`` shrinks step counts and batch sizes so the test suite runs every chapter in minutes.
"""

import dataclasses
import os

from sdlib import device, presets
from sdlib.pipeline import StableDiffusion

INPAINTING_PRESETS = {"sd-v1-5": "sd-v1-5-inpainting", "mini-shapes": "mini-shapes-inpaint",
                      "tiny": "tiny-inpaint"}


@dataclasses.dataclass
class ChapterSetup:
    preset: str
    ci: bool
    device: str
    img_size: int

    def steps(self, full):
        """``full`` steps for a reader, a handful under CI."""
        return min(full, 4) if self.ci else full

    def pipeline(self, **kwargs):
        kwargs.setdefault("img_height", self.img_size)
        kwargs.setdefault("img_width", self.img_size)
        return StableDiffusion.from_preset(self.preset, **kwargs)

    def inpainting_pipeline(self, **kwargs):
        """The inpainting model that goes with the chapter's model (a 9-channel UNet)."""
        kwargs.setdefault("img_height", self.img_size)
        kwargs.setdefault("img_width", self.img_size)
        return StableDiffusion.from_preset(INPAINTING_PRESETS[self.preset], **kwargs)

    def is_real_sd(self):
        return self.preset == "sd-v1-5"


def real_weights_reachable():
    """True when SD v1.5's weights are on disk ($SDLIB_SD15_WEIGHTS) or the hub may be asked."""
    if os.environ.get("SDLIB_SD15_WEIGHTS"):
        return True
    try:
        import huggingface_hub  # noqa: F401  (an optional extra: present or not)
    except ImportError:
        return False
    return os.environ.get("HF_HUB_OFFLINE", "0") != "1"


def chapter_setup(verbose=True):
    ci = os.environ.get("SDLIB_CI", "0") == "1"
    info = device.describe()
    preset = os.environ.get("SDLIB_PRESET")
    if not preset:
        preset = "sd-v1-5" if info.kind != "cpu" and real_weights_reachable() else "mini-shapes"
    setup = ChapterSetup(preset=preset, ci=ci, device=info.description(),
                         img_size=presets.get_preset(preset).image_size)
    if verbose:
        note = {"mini-shapes": "the shipped miniature model, offline",
                "tiny": "random toy weights: pictures are noise",
                "sd-v1-5": "real Stable Diffusion v1.5"}.get(preset, preset)
        print(f"model: {preset} ({note})" + ("; CI-sized run" if ci else ""))
        print(setup.device)
    return setup
