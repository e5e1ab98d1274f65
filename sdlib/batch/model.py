"""Which model a batch runs, said in a form that travels to every worker (a preset name or a
weights path, the image size, the XLA choice), and what the manifest records of it: its name,
the SHA-256 of its weights and its image size."""

import dataclasses
import hashlib
import os

from sdlib import loading, presets
from sdlib.loading import hub
from sdlib.pipeline import StableDiffusion

CHUNK = 1 << 20  # bytes read at a time when hashing weights


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A preset (``preset``) or a checkpoint (``weights``: a diffusers folder, a .safetensors
    file or a hub repo id), built at ``height`` x ``width`` (None: the model's size)."""

    preset: str | None = "mini-shapes"
    weights: str | None = None
    height: int | None = None
    width: int | None = None
    jit_compile: bool | str = "auto"

    def __post_init__(self):
        if (self.preset is None) == (self.weights is None):
            raise ValueError("a batch's model is a preset or weights: give exactly one.")
        if self.preset is not None:
            presets.get_preset(self.preset)  # an unknown name fails here, before any work

    @property
    def name(self):
        return self.preset if self.preset is not None else str(self.weights)

    def size(self):
        """(height, width) of the images: the given size, else the preset's (512 for weights, as
        ``from_pretrained``)."""
        default = presets.get_preset(self.preset).image_size if self.preset else 512
        return (self.height or default, self.width or default)

    def weights_location(self):
        """The local file or folder of the weights (a hub repo id is downloaded to the cache);
        None for a preset of seeded random weights (``tiny``)."""
        location = (loading.preset_weights(presets.get_preset(self.preset)) if self.preset
                    else self.weights)
        return None if location is None else hub.resolve(location)

    def scheduler_config(self):
        """The noise schedule the model samples with (configs only: no weights are read)."""
        location = self.weights_location()
        if location is None:
            return presets.get_preset(self.preset).configs()["scheduler"]
        return loading.open_checkpoint(location).configs["scheduler"]

    def build(self):
        height, width = self.size()
        if self.preset is not None:
            return StableDiffusion.from_preset(self.preset, img_height=height, img_width=width,
                                               jit_compile=self.jit_compile)
        return StableDiffusion.from_pretrained(self.weights, img_height=height, img_width=width,
                                               jit_compile=self.jit_compile)

    def identity(self):
        """What must be equal for two runs' images to belong to one manifest."""
        height, width = self.size()
        return {"model": self.name, "weights_sha256": weights_sha256(self.weights_location()),
                "height": height, "width": width}


def weights_sha256(location):
    """SHA-256 of a weights file; of a folder, over each file's relative path and SHA-256 (sorted,
    hidden files skipped); None for seeded random weights."""
    if location is None:
        return None
    if os.path.isfile(location):
        return file_sha256(location)
    listing = hashlib.sha256()
    for folder, subfolders, files in os.walk(location):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(name for name in files if not name.startswith(".")):
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, location).replace(os.sep, "/")
            listing.update(f"{relative}\0{file_sha256(path)}\n".encode())
    return listing.hexdigest()


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
