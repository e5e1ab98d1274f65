"""CLIP text encoder: a causal transformer over 77 BPE tokens (Radford et al. 2021, sec. 2.4).

Stable Diffusion conditions the UNet on the last hidden state (after the final LayerNorm), shape
(B, 77, hidden_size). Layer names follow transformers' ``CLIPTextModel`` (without ``text_model.``).
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from sdlib.config import Config
from sdlib.models import layers as L
from sdlib.models.base import ConfiguredModel


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig(Config):
    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_diffusers(cls, config: dict) -> "TextEncoderConfig":
        """Read a transformers ``CLIPTextConfig`` dict (``text_encoder/config.json``)."""
        if config.get("hidden_act", "quick_gelu") not in ACTIVATIONS:
            raise ValueError(
                f"text encoder hidden_act {config['hidden_act']!r} is not supported; "
                f"sdlib implements {sorted(ACTIVATIONS)}."
            )
        return cls.from_dict(config)

    def to_diffusers(self, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> dict:
        """``text_encoder/config.json`` for transformers' ``CLIPTextModel``."""
        return {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
                **self.to_dict(), "projection_dim": self.hidden_size,
                "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
                "pad_token_id": pad_token_id}


def quick_gelu(x):
    return x * ops.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": L.gelu,
    "gelu_new": lambda x: ops.gelu(x, approximate=True),
}


class CLIPEmbeddings(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        init = L._init("random_normal")
        self.token_embedding = keras.layers.Embedding(
            config.vocab_size, config.hidden_size, embeddings_initializer=init, dtype=dtype
        )
        self.position_embedding = keras.layers.Embedding(
            config.max_position_embeddings, config.hidden_size, embeddings_initializer=init,
            dtype=dtype
        )

    def build(self, token_ids_shape):
        self.token_embedding.build(token_ids_shape)
        self.position_embedding.build(token_ids_shape[1:])

    def call(self, token_ids):
        return self.with_positions(self.token_embedding(token_ids))  # (B, T, D)

    def with_positions(self, token_vectors):
        """Token vectors (B, T, D), looked up or learned (textual inversion), plus positions."""
        positions = ops.arange(ops.shape(token_vectors)[1])
        return token_vectors + self.position_embedding(positions)[None]  # (1, T, D) broadcast


class CLIPAttention(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.num_heads = config.num_attention_heads
        self.k_proj = L.dense(config.hidden_size, dtype=dtype)
        self.v_proj = L.dense(config.hidden_size, dtype=dtype)
        self.q_proj = L.dense(config.hidden_size, dtype=dtype)
        self.out_proj = L.dense(config.hidden_size, dtype=dtype)

    def build(self, x_shape):
        for dense in (self.k_proj, self.v_proj, self.q_proj, self.out_proj):
            dense.build(x_shape)

    def call(self, x):
        out = L.multi_head_attention(
            self.q_proj(x), self.k_proj(x), self.v_proj(x), self.num_heads, is_causal=True
        )
        return self.out_proj(out)


class CLIPMLP(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.fc1 = L.dense(config.intermediate_size, dtype=self.dtype_policy)
        self.fc2 = L.dense(config.hidden_size, dtype=self.dtype_policy)

    def build(self, x_shape):
        self.fc1.build(x_shape)
        self.fc2.build(L.with_channels(x_shape, self.fc1.units))

    def call(self, x):
        return self.fc2(self.activation(self.fc1(x)))


class CLIPEncoderLayer(keras.layers.Layer):
    """Pre-norm transformer layer: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.self_attn = CLIPAttention(config, dtype=dtype)
        self.layer_norm1 = L.layer_norm(config.layer_norm_eps, dtype=dtype)
        self.mlp = CLIPMLP(config, dtype=dtype)
        self.layer_norm2 = L.layer_norm(config.layer_norm_eps, dtype=dtype)

    def build(self, x_shape):
        for layer in (self.self_attn, self.layer_norm1, self.mlp, self.layer_norm2):
            layer.build(x_shape)

    def call(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.layers = [CLIPEncoderLayer(config, dtype=self.dtype_policy)
                       for _ in range(config.num_hidden_layers)]

    def build(self, x_shape):
        for layer in self.layers:
            layer.build(x_shape)

    def call(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@keras.saving.register_keras_serializable(package="sdlib")
class CLIPTextEncoder(ConfiguredModel):
    """Token ids (B, T) int -> last hidden state (B, T, hidden_size)."""

    config_class = TextEncoderConfig

    def __init__(self, config: TextEncoderConfig, **kwargs):
        super().__init__(config, **kwargs)
        dtype = self.dtype_policy
        # === Layers ===
        self.embeddings = CLIPEmbeddings(config, dtype=dtype)
        self.encoder = CLIPEncoder(config, dtype=dtype)
        self.final_layer_norm = L.layer_norm(config.layer_norm_eps, dtype=dtype)

    def build(self, token_ids_shape):
        self.embeddings.build(token_ids_shape)
        x_shape = (*token_ids_shape, self.config.hidden_size)  # (B, T, D)
        self.encoder.build(x_shape)
        self.final_layer_norm.build(x_shape)

    def call(self, token_ids):
        x = self.embeddings(token_ids)  # (B, T, D)
        x = self.encoder(x)
        return self.final_layer_norm(x)  # (B, T, D)

    def from_token_vectors(self, token_vectors):
        """The encoding of token vectors (B, T, D) instead of ids, as transformers'
        ``inputs_embeds``: what textual inversion differentiates through."""
        x = self.encoder(self.embeddings.with_positions(token_vectors))
        return self.final_layer_norm(x)  # (B, T, D)

    def build_weights(self):
        self.build((None, self.config.max_position_embeddings))
        return self

    def resize_token_embeddings(self, num_tokens):
        """Give the token table ``num_tokens`` rows (textual inversion's new words), keeping the
        rows it had, as transformers' ``resize_token_embeddings`` does; new rows start as the mean
        of the old ones. The table is a new variable: functions compiled over the old one must be
        compiled again."""
        table = self.embeddings.token_embedding
        old = ops.convert_to_numpy(table.embeddings)  # (V, D)
        kept = old[:num_tokens]
        extra = np.repeat(old.mean(axis=0, keepdims=True), num_tokens - len(kept), axis=0)
        table._untrack_variable(table._embeddings)
        table._tracker.unlock()  # as Keras' own enable_lora adds state to a built layer
        table.input_dim = num_tokens
        table._embeddings = table.add_weight(shape=(num_tokens, old.shape[1]), name="embeddings",
                                             initializer="zeros", trainable=True)
        table._tracker.lock()
        table._embeddings.assign(np.concatenate([kept, extra]).astype(old.dtype))
        self.config = dataclasses.replace(self.config, vocab_size=num_tokens)
