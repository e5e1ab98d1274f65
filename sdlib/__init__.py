"""sdlib: Stable Diffusion v1 in Keras 3, the library of the book.

    import sdlib
    pipe = sdlib.StableDiffusion.from_preset("tiny")
    images = pipe.text_to_image("a small red circle", batch_size=3)   # uint8 (3, 64, 64, 3)
"""

from sdlib.pipeline import StableDiffusion
from sdlib.presets import PRESETS
from sdlib.tokenizer import CLIPTokenizer
from sdlib.weights import CheckpointError

__all__ = ["StableDiffusion", "CLIPTokenizer", "CheckpointError", "PRESETS"]
__version__ = "0.1.0"
