"""Building blocks shared by the UNet, the VAE and the text encoder.

Every block names its sub-layers after the attributes of the matching PyTorch module in diffusers /
transformers (``norm1``, ``conv1``, ``to_out.0`` ...). :func:`named_leaf_layers` walks those
attributes, so the weight loader maps a checkpoint key such as
``down_blocks.0.resnets.1.conv1.weight`` onto a Keras variable without a hand-written table. NHWC
everywhere.
"""

import contextlib
import math

import keras
import numpy as np
from keras import ops

# Layer types that own weights. Everything else is a container walked by `named_leaf_layers`.
LEAF_TYPES = (
    keras.layers.Conv2D,
    keras.layers.Dense,
    keras.layers.GroupNormalization,
    keras.layers.LayerNormalization,
    keras.layers.Embedding,
)

_FAST_INIT = [False]


@contextlib.contextmanager
def fast_init():
    """Create weights with zeros instead of random values (for weights that get loaded right after).

    Random initialisation of 1.07 B parameters costs ~15-20 s on a 2-core CPU; zeros cost almost
    nothing.
    """
    previous = _FAST_INIT[0]
    _FAST_INIT[0] = True
    try:
        yield
    finally:
        _FAST_INIT[0] = previous


def _init(default):
    return "zeros" if _FAST_INIT[0] else default


def with_channels(shape, channels):
    """``shape`` with its last axis replaced: what a sub-layer that changes the channels outputs.

    Container layers build their sub-layers from shapes (``build``), as Keras recommends, instead of
    running a forward pass: building SD v1.5 then executes no ops but the weights' creation.
    """
    return (*shape[:-1], channels)


def image_shape(channels):
    """A channels-last image shape whose batch and spatial sizes are left open: weights do not
    depend on them."""
    return (None, None, None, channels)


def conv2d(filters, kernel_size, strides=1, padding="same", dtype=None, name=None):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, dtype=dtype, name=name,
        kernel_initializer=_init("glorot_uniform"),
    )


def dense(units, use_bias=True, dtype=None, name=None):
    return keras.layers.Dense(
        units, use_bias=use_bias, dtype=dtype, name=name, kernel_initializer=_init("glorot_uniform")
    )


def expand_groups(per_group, batch, groups, width):
    """(B, G, 1) -> (B, 1, G * W): each channel gets the value of its group (a broadcast, not
    ``ops.repeat``, which TensorFlow builds from a dozen ops)."""
    per_channel = ops.broadcast_to(per_group, (batch, groups, width))  # (B, G, W)
    return ops.reshape(per_channel, (batch, 1, groups * width))


class GroupNorm(keras.layers.GroupNormalization):
    """Group normalization (Wu & He 2018) of channels-last inputs, statistics in float32.

    Same weights and result as Keras' layer, computed differently: per-channel sums over all pixels
    first (long, contiguous reductions), then per group. Keras reduces a (B, HW, groups, C / groups)
    view whose innermost axis is only C / groups long; in TensorFlow on a CPU that made the VAE
    decoder's 512x512x128 norms 4x slower than here and cost a third of the decode. Two passes
    (mean, then squared deviations) keep the variance exact where the mean is large. The result is
    applied as one per-channel scale and shift in the compute dtype.
    """

    def call(self, inputs):
        shape = ops.shape(inputs)  # ints where static (always, inside the pipeline's functions)
        batch, channels = shape[0], shape[-1]
        groups, width = self.groups, channels // self.groups
        pixels = math.prod(shape[1:-1]) if all(isinstance(d, int) for d in shape[1:-1]) else -1
        x = ops.reshape(inputs, (batch, pixels, channels))  # (B, N, C), N = pixels
        x32 = ops.cast(x, "float32")
        count = (pixels if pixels != -1 else ops.cast(ops.shape(x)[1], "float32")) * width

        def group_mean(per_channel_sum):  # (B, C) -> (B, 1, C), each channel its group's mean
            grouped = ops.reshape(per_channel_sum, (batch, groups, width))
            means = ops.sum(grouped, axis=-1, keepdims=True) / count  # (B, G, 1)
            return expand_groups(means, batch, groups, width)

        mean = group_mean(ops.sum(x32, axis=1))
        variance = group_mean(ops.sum(ops.square(x32 - mean), axis=1))
        scale = ops.rsqrt(variance + self.epsilon) * ops.cast(self.gamma, "float32")  # (B, 1, C)
        shift = ops.cast(self.beta, "float32") - mean * scale
        out = x * ops.cast(scale, x.dtype) + ops.cast(shift, x.dtype)  # in the compute dtype
        return ops.reshape(out, shape)


class LayerNorm(keras.layers.LayerNormalization):
    """Layer normalization (Ba et al. 2016) over the last axis, statistics in float32.

    Same weights and result as Keras' layer (computed in float32, returned in the compute dtype) in
    a third of the graph ops Keras' version traces: it casts every operand and builds its moments
    with a stop-gradient. Fewer ops make TensorFlow's trace and first-call graph optimisation
    shorter.
    """

    def call(self, inputs):
        x32 = ops.cast(inputs, "float32")
        mean = ops.mean(x32, axis=-1, keepdims=True)  # (..., 1)
        centered = x32 - mean
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
        out = centered * ops.rsqrt(variance + self.epsilon) * ops.cast(self.gamma, "float32")
        return ops.cast(out + ops.cast(self.beta, "float32"), self.compute_dtype)


def group_norm(groups, epsilon, dtype=None, name=None):
    # Keras' default epsilon (1e-3) is wrong for SD: the UNet uses 1e-5, the VAE and the
    # spatial transformers' input norm 1e-6.
    return GroupNorm(groups=groups, epsilon=epsilon, dtype=dtype, name=name)


def layer_norm(epsilon, dtype=None, name=None):
    return LayerNorm(epsilon=epsilon, dtype=dtype, name=name)


def named_leaf_layers(layer, prefix=""):
    """Yield ``(dotted_name, leaf_layer)`` for every weight-owning layer under ``layer``.

    Names follow public attribute names in assignment order; lists contribute their index,
    exactly like ``torch.nn.Module.named_modules``.
    """
    if isinstance(layer, LEAF_TYPES):
        yield prefix, layer
        return
    # On the torch backend a Layer is a torch.nn.Module, which keeps sub-layers (not lists) in
    # ``_modules`` rather than in the instance dict.
    attributes = {**vars(layer), **vars(layer).get("_modules", {})}
    for attr, value in attributes.items():
        if attr.startswith("_"):
            continue
        name = f"{prefix}.{attr}" if prefix else attr
        if isinstance(value, keras.layers.Layer):
            yield from named_leaf_layers(value, name)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                if isinstance(item, keras.layers.Layer):
                    yield from named_leaf_layers(item, f"{name}.{index}")


def silu(x):
    return x * ops.sigmoid(x)


class ResnetBlock2D(keras.layers.Layer):
    """Two 3x3 convs with GroupNorm + SiLU, optional time embedding (Ho et al. 2020, App. B)."""

    def __init__(self, out_channels, groups, epsilon, use_time_embedding=True, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = out_channels
        dtype = self.dtype_policy
        # === Layers ===
        self.norm1 = group_norm(groups, epsilon, dtype=dtype)
        self.conv1 = conv2d(out_channels, 3, dtype=dtype)
        self.time_emb_proj = dense(out_channels, dtype=dtype) if use_time_embedding else None
        self.norm2 = group_norm(groups, epsilon, dtype=dtype)
        self.conv2 = conv2d(out_channels, 3, dtype=dtype)
        self.conv_shortcut = None

    def build(self, x_shape, time_embedding_shape=None):
        hidden_shape = with_channels(x_shape, self.out_channels)
        self.norm1.build(x_shape)
        self.conv1.build(x_shape)
        if self.time_emb_proj is not None:
            self.time_emb_proj.build(time_embedding_shape)
        self.norm2.build(hidden_shape)
        self.conv2.build(hidden_shape)
        if x_shape[-1] != self.out_channels:
            self.conv_shortcut = conv2d(self.out_channels, 1, dtype=self.dtype_policy)
            self.conv_shortcut.build(x_shape)

    def call(self, x, time_embedding=None):
        h = self.conv1(silu(self.norm1(x)))  # (B, H, W, out)
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(silu(time_embedding))[:, None, None, :]
        h = self.conv2(silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class Downsample2D(keras.layers.Layer):
    """3x3 conv with stride 2. ``padding`` is (before, after) per spatial axis.

    The UNet pads (1, 1); the VAE encoder pads (0, 1). Keras' 'same' with stride 2 pads (0, 1) on
    even sizes, which is wrong for the UNet, so the padding is explicit.
    """

    def __init__(self, channels, padding=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.padding = tuple(padding)
        self.conv = conv2d(channels, 3, strides=2, padding="valid", dtype=self.dtype_policy)

    def build(self, x_shape):
        self.conv.build(x_shape)

    def call(self, x):
        before, after = self.padding
        x = ops.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])
        return self.conv(x)  # (B, H/2, W/2, C)


class Upsample2D(keras.layers.Layer):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.conv = conv2d(channels, 3, dtype=self.dtype_policy)

    def build(self, x_shape):
        self.conv.build(x_shape)

    def call(self, x):
        batch, height, width, channels = ops.shape(x)
        x = ops.broadcast_to(x[:, :, None, :, None, :], (batch, height, 2, width, 2, channels))
        x = ops.reshape(x, (batch, 2 * height, 2 * width, channels))  # (B, 2H, 2W, C)
        return self.conv(x)


def nearest_resize(x, size):
    """Nearest-neighbour resize of (B, H, W, C) to ``size``, picking source pixels the way torch's
    ``F.interpolate(size=...)`` does: floor(i * in / out)."""
    height, width = x.shape[1], x.shape[2]
    rows = np.floor(np.arange(size[0]) * (height / size[0])).astype("int32")
    cols = np.floor(np.arange(size[1]) * (width / size[1])).astype("int32")
    return ops.take(ops.take(x, rows, axis=1), cols, axis=2)  # (B, size[0], size[1], C)


def gelu(x):
    """Exact GELU (Hendrycks & Gimpel 2016): x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).

    Written out with ``ops.erf``: TensorFlow's own exact GELU runs ~2.5x slower in bfloat16 on CPU.
    """
    # ops.multiply, not `*`: on torch a numpy array cannot stand left of a torch tensor.
    return ops.multiply(0.5 * x, 1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def multi_head_attention(query, key, value, num_heads, is_causal=False):
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1) of (B, T, heads * head_dim) inputs.

    On TensorFlow the scale is folded into the queries and bfloat16 logits stay bfloat16: its
    bfloat16 matmul rounds them anyway, and a float32 softmax over (B, heads, T, T) would move twice
    the bytes (at 512x512 the first level attends over 4096 tokens: 537 MB of logits a call); this
    runs the attention of a 512x512 UNet step 1.7x faster on a CPU. float16 logits are upcast, since
    they can overflow, and scaled after the upcast. Other backends use ``ops.dot_product_attention``
    (JAX: float32 logits, fused).
    """
    batch = ops.shape(query)[0]
    head_dim = query.shape[-1] // num_heads

    def split(x):  # (B, T, N * D) -> (B, T, N, D)
        return ops.reshape(x, (batch, -1, num_heads, head_dim))

    if keras.backend.backend() != "tensorflow":
        out = ops.dot_product_attention(split(query), split(key), split(value),
                                        scale=1.0 / math.sqrt(head_dim), is_causal=is_causal)
        return ops.reshape(out, (batch, -1, num_heads * head_dim))  # (B, Tq, N * D)
    scale = 1.0 / math.sqrt(head_dim)
    upcast = keras.backend.standardize_dtype(query.dtype) == "float16"
    if not upcast:
        query = query * ops.cast(scale, query.dtype)
    q, k, v = (ops.transpose(split(x), (0, 2, 1, 3)) for x in (query, key, value))  # (B, N, T, D)
    logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # (B, N, Tq, Tk)
    if upcast:  # scaled in float32, as Keras does: a float16 scale would round the queries
        logits = ops.cast(logits, "float32") * scale
    if is_causal:
        positions = ops.arange(ops.shape(logits)[-1])
        future = positions[None, :] > positions[:, None]  # (Tq, Tk): key after query
        logits = ops.where(future, ops.cast(-1e9, logits.dtype), logits)
    probs = ops.cast(ops.softmax(logits, axis=-1), v.dtype)
    out = ops.matmul(probs, v)  # (B, N, Tq, D)
    return ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (batch, -1, num_heads * head_dim))
