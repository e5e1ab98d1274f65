"""What ``from_pretrained`` and ``from_preset`` read, in two steps: the configs, then the weights.

A checkpoint is a diffusers folder, an original-layout single file or an sdlib file (a path, or a
hub repo id that is downloaded first). :func:`open_checkpoint` reads only its configs, so the
pipeline can choose the device mode ("auto", ``sdlib.device``) from the UNet's size before any
weight exists; ``Checkpoint.load(dtype)`` then builds the models in that dtype and assigns the
file's tensors.
"""

import dataclasses
import os

from sdlib.loading import hub
from sdlib.loading.build import Components
from sdlib.loading.folder import load_folder, read_folder_configs
from sdlib.loading.safetensors import read_header, read_safetensors
from sdlib.loading.sdlib_file import is_sdlib_file, load_sdlib_file, read_sdlib_configs
from sdlib.loading.single_file import load_single_file, single_file_configs


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint whose configs are read and whose weights are not, yet."""

    path: str
    kind: str  # "folder", "single file" or "sdlib file"
    configs: dict
    variant: str | None = None
    config_path: str | None = None

    def load(self, dtype="float32") -> Components:
        if self.kind == "folder":
            return load_folder(self.path, self.configs, dtype=dtype, variant=self.variant)
        if self.kind == "sdlib file":
            return load_sdlib_file(self.path, self.configs, dtype=dtype)
        return load_single_file(self.path, read_safetensors(self.path, mapped=True), self.configs,
                                dtype=dtype, config_path=self.config_path)


def open_checkpoint(path_or_repo_id, variant=None, token=None, config_path=None) -> Checkpoint:
    """Find the checkpoint (downloading a hub repo id) and read its configs.

    ``variant="fp16"`` picks ``*.fp16.safetensors`` in a folder. A single file holds no configs:
    ``config_path`` names a diffusers folder whose configs it follows, else SD v1.5's are assumed.
    """
    path = hub.resolve(path_or_repo_id, variant=variant, token=token)
    if os.path.isdir(path):
        return Checkpoint(path, "folder", read_folder_configs(path), variant=variant)
    header = read_header(path)
    if is_sdlib_file(header.get("__metadata__") or {}):
        return Checkpoint(path, "sdlib file", read_sdlib_configs(path))
    return Checkpoint(path, "single file", single_file_configs(config_path, header),
                      config_path=config_path)


def preset_weights(preset):
    """Where a preset's weights are: a local copy named by its environment variable, the file
    shipped in the package, or its hub repo id; None for a preset of random weights."""
    if preset.weights_env and os.environ.get(preset.weights_env):
        return os.environ[preset.weights_env]
    if preset.shipped_weights is not None:
        if not preset.shipped_weights.exists():
            raise FileNotFoundError(f"The {preset.name} weights are missing "
                                    f"({preset.shipped_weights}); reinstall sdlib, or train them "
                                    "with tools/train_mini_model.py.")
        return str(preset.shipped_weights)
    return preset.repo_id
