"""The pipeline's adapter methods: LoRA files and textual-inversion embeddings (as diffusers'
``StableDiffusionLoraLoaderMixin`` and ``TextualInversionLoaderMixin`` give its pipelines).

LoRA is merged into the weights (``sdlib.loading.lora.LoraStack``): no cost per step, and loading,
rescaling or unloading assigns new values to the same variables, so nothing compiles again. An
embedding gives the text encoder's token table new rows: the text encoder (only it) compiles again.
"""

import os

import numpy as np

from sdlib import presets
from sdlib.backend import CompiledFunction
from sdlib.loading.lora import LoraStack, read_lora_file
from sdlib.loading.textual_inversion import read_embedding_file


class AdapterMethods:
    """Mixed into :class:`sdlib.StableDiffusion`; needs its ``unet``, ``text_encoder``,
    ``tokenizer``, ``jit_compile``, ``_encode_graph`` and ``_encode_fn``."""

    def _init_adapters(self):
        self._lora = LoraStack({"unet": self.unet, "text_encoder": self.text_encoder})

    def load_lora_weights(self, path, scale=1.0, adapter_name=None):
        """Merge a LoRA ``.safetensors`` file (diffusers / PEFT or kohya format), or one shipped
        with sdlib by name (``sdlib.presets.SHIPPED_LORAS``), into the UNet and the text encoder:
        ``W + scale * (alpha / rank) * up @ down``. ``adapter_name`` defaults to ``default_0``,
        ``default_1``, ... Returns the name. A file that does not fit changes nothing."""
        scale = _finite(scale, "scale")
        name = f"default_{len(self._lora.deltas)}" if adapter_name is None else str(adapter_name)
        if not os.path.exists(os.fspath(path)) and path in presets.SHIPPED_LORAS:
            path = presets.SHIPPED_LORAS[path]
        self._lora.add(name, read_lora_file(path), scale)
        return name

    def set_lora_scales(self, scales):
        """The scale of every active adapter, e.g. ``{"style": 0.5, "detail": 1.0}``; loaded
        adapters not named are switched off (still loaded), as diffusers' ``set_adapters`` does.
        Each call re-merges from the base weights, so scales can change any number of times."""
        if not isinstance(scales, dict):
            raise TypeError(f"set_lora_scales takes a dict of adapter name -> scale, got "
                            f"{type(scales).__name__}; e.g. {{'default_0': 0.8}}.")
        self._lora.set_scales({name: _finite(scale, f"the scale of {name!r}")
                               for name, scale in scales.items()})

    @property
    def lora_scales(self):
        """The loaded adapters and their scales (0 = switched off)."""
        return dict(self._lora.scales)

    def unload_lora_weights(self):
        """Remove every adapter: the base weights come back bit for bit. Embeddings stay."""
        self._lora.unload()

    def load_textual_inversion(self, path, token=None):
        """Add a textual-inversion embedding (diffusers' ``{"<tok>": (n, D)}`` or A1111's
        ``{"emb_params": (n, D)}``, safetensors; or a shipped one by its token,
        ``sdlib.presets.SHIPPED_EMBEDDINGS``); returns the tokens added. ``token`` names it
        (A1111 files default to the file's stem). Prompts then expand ``<tok>`` into its n
        tokens."""
        if not os.path.exists(os.fspath(path)) and path in presets.SHIPPED_EMBEDDINGS:
            path = presets.SHIPPED_EMBEDDINGS[path]
        width = self.text_encoder.config.hidden_size
        embedding = read_embedding_file(path, token=token, width=width)
        ids = self.tokenizer.add_tokens(embedding.tokens)  # raises if a token exists: no change
        self.text_encoder.resize_token_embeddings(len(self.tokenizer))
        table = self.text_encoder.embeddings.token_embedding.embeddings
        values = np.array(table.numpy())
        values[ids] = embedding.vectors.astype(values.dtype)
        table.assign(values)
        # The table is a new variable: JAX's compiled text encoder holds the old one's place.
        traces = self._encode_fn.trace_count
        self._encode_fn = CompiledFunction(self._encode_graph, [self.text_encoder],
                                           self.jit_compile)
        self._encode_fn.trace_count = traces
        self._lora.models = {"unet": self.unet, "text_encoder": self.text_encoder}
        return list(embedding.tokens)


def _finite(value, name):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}.") from None
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    return value
