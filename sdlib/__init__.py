"""sdlib: Stable Diffusion v1 in Keras 3, the library of the book.

    import sdlib
    pipe = sdlib.StableDiffusion.from_preset("tiny")
    images = pipe.text_to_image("a small red circle", batch_size=3)   # uint8 (3, 64, 64, 3)
    sdlib.doctor()   # is this machine ready for the book? (python -m sdlib doctor)

Importing sdlib loads the pipeline and what it stands on (``models``, ``sampling``, ``loading``,
``presets``, ``device``); the book's helpers (``sdlib.book``), the miniature world (``sdlib.mini``),
training (``sdlib.training``) and the command line (``sdlib.cli``) load when imported.
"""

import os

# Quiet TensorFlow's C++ start-up logs (CUDA probing, oneDNN notes) unless the user asked for them:
# the level where it is read, and a filter for the lines TensorFlow prints whatever the level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sdlib.native_logs import native_logs_hidden  # noqa: E402

with native_logs_hidden():
    from sdlib import doctor  # a module that runs its checks when called: sdlib.doctor()
    from sdlib.errors import CheckpointError
    from sdlib.loading import Components
    from sdlib.pipeline import StableDiffusion
    from sdlib.presets import PRESETS
    from sdlib.tokenizer import CLIPTokenizer

__all__ = ["StableDiffusion", "Components", "CLIPTokenizer", "CheckpointError", "PRESETS",
           "doctor"]
__version__ = "0.1.0"
