"""Reading checkpoints into :class:`Components`: diffusers folders, original single files, sdlib's
own files (``safetensors`` only, never a pickle), from a path or the hub; and writing diffusers
folders and sdlib files. Imports ``models``,
``sampling`` and ``presets``; nothing above them."""

from sdlib.loading.build import Components
from sdlib.loading.checkpoint import Checkpoint, open_checkpoint, preset_weights
from sdlib.loading.folder import save_folder

__all__ = ["Checkpoint", "Components", "open_checkpoint", "preset_weights", "save_folder"]
