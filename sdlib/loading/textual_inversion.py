"""Textual-inversion embeddings (Gal et al. 2022, "An Image is Worth One Word"): new words for the
text encoder, learned as vectors in its token-embedding space while everything else stays frozen.

A file holds ``n`` vectors for one token. Loading adds ``<tok>`` (n = 1) or ``<tok>, <tok>_1, ...,
<tok>_{n-1}`` to the tokenizer, with ids after its vocab and after any token added before, gives
the text encoder's token table a row for each, and lets the tokenizer expand ``<tok>`` in a prompt
into all n tokens (diffusers' ``TextualInversionLoaderMixin``). Two formats, safetensors only:

- diffusers: ``{"<tok>": (D,) or (n, D)}``, the token is the key (``token=`` renames it);
- A1111: ``{"emb_params": (n, D)}``, the token is ``token=`` or else the file's stem, as A1111
  names an embedding after its file.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdlib.errors import CheckpointError
from sdlib.loading.safetensors import CONVERT_HINT, read_safetensors

TEXT_WIDTHS = {768: "SD v1", 1024: "SD 2.x", 1280: "SDXL"}


@dataclass(frozen=True)
class Embedding:
    """The tokens a file adds and their vectors (n, D), float32."""

    path: str
    tokens: tuple
    vectors: np.ndarray


def read_embedding_file(path, token=None, width=None) -> Embedding:
    """Read an embedding file; ``width``: the text encoder's hidden size, checked if given."""
    path = os.fspath(path)
    if not path.lower().endswith(".safetensors"):
        raise CheckpointError(
            f"{path}: embeddings are read from .safetensors only; sdlib never unpickles (.pt and "
            f".bin embeddings are pickles). {CONVERT_HINT}"
        )
    state = read_safetensors(path)
    if "emb_params" in state and len(state) == 1:  # A1111
        name, vectors = token or Path(path).stem, state["emb_params"]
    elif len(state) == 1:  # diffusers
        (name, vectors), = state.items()
        name = token or name
    else:
        raise CheckpointError(
            f"{path} is not a textual-inversion file: it holds {len(state)} tensors "
            f"({', '.join(sorted(state)[:4])}...), and an embedding file holds one "
            "({'<token>': (n, D)} or {'emb_params': (n, D)}). Is it a LoRA file "
            "(load_lora_weights) or an SDXL embedding (two tensors; SD v1 takes one)?"
        )
    vectors = np.asarray(vectors).astype(np.float32)
    vectors = vectors[None] if vectors.ndim == 1 else vectors  # (n, D)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise CheckpointError(f"{path}: an embedding is (D,) or (n, D); got {vectors.shape}.")
    if not np.all(np.isfinite(vectors)):
        raise CheckpointError(f"{path}: the embedding holds NaN or inf.")
    if width is not None and vectors.shape[1] != width:
        made_for = TEXT_WIDTHS.get(vectors.shape[1])
        hint = f" It seems made for {made_for}." if made_for else ""
        raise CheckpointError(
            f"{path}: the embedding has width {vectors.shape[1]} but this text encoder's is "
            f"{width}.{hint} Use an embedding trained for this base model."
        )
    tokens = (name, *(f"{name}_{index}" for index in range(1, len(vectors))))
    return Embedding(path, tokens, vectors)
