"""sdlib: Stable Diffusion v1 in Keras 3, the library of the book.

    import sdlib
    pipe = sdlib.StableDiffusion.from_preset("tiny")
    images = pipe.text_to_image("a small red circle", batch_size=3)   # uint8 (3, 64, 64, 3)

Importing sdlib loads the pipeline and what it stands on (``models``, ``sampling``, ``loading``,
``presets``, ``device``); the book's helpers (``sdlib.book``), the miniature world (``sdlib.mini``),
training (``sdlib.training``) and the command line (``sdlib.cli``) load when imported.
"""

import os

# Quiet TensorFlow's C++ start-up logs (CUDA probing, oneDNN notes) unless the user asked for them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sdlib.errors import CheckpointError  # noqa: E402
from sdlib.loading import Components  # noqa: E402
from sdlib.pipeline import StableDiffusion  # noqa: E402
from sdlib.presets import PRESETS  # noqa: E402
from sdlib.tokenizer import CLIPTokenizer  # noqa: E402

__all__ = ["StableDiffusion", "Components", "CLIPTokenizer", "CheckpointError", "PRESETS"]
__version__ = "0.1.0"
