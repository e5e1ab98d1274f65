"""The diffusion UNet of latent diffusion (Rombach et al. 2022, sec. 3.3 and App. E.2).

A UNet (Ronneberger et al. 2015) of ResNet blocks with a time embedding, and spatial transformers
whose cross-attention reads the text encoding. Written level by level, so it can be read beside the
figure: down blocks keep their outputs as skips, the up blocks concatenate them back in. Layer names
follow diffusers' ``UNet2DConditionModel``. NHWC.

A latent-consistency UNet (Luo et al. 2023, sec. 4.2, "guided distillation") also reads the
guidance scale: its Fourier embedding goes through ``time_embedding.cond_proj`` and is added to the
timestep's features (``time_cond_proj_dim`` in the config), so guidance needs no second pass.
"""

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from sdlib.config import DIFFUSERS_FORMAT_VERSION, Config
from sdlib.models import layers as L
from sdlib.models.base import ConfiguredModel

SUPPORTED_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
SUPPORTED_UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")


@dataclasses.dataclass(frozen=True)
class UNetConfig(Config):
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple = (320, 640, 1280, 1280)
    down_block_types: tuple = (
        "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D",
    )
    up_block_types: tuple = (
        "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
    )
    layers_per_block: int = 2
    num_attention_heads: tuple = (8, 8, 8, 8)  # per level; SD v1's "attention_head_dim: 8" is this
    transformer_layers_per_block: int = 1
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    use_linear_projection: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    time_cond_proj_dim: int | None = None  # the guidance embedding's size (LCM-distilled UNets)

    @classmethod
    def from_diffusers(cls, config: dict) -> "UNetConfig":
        """Read ``unet/config.json``; refuse what this UNet does not implement, naming it."""
        _refuse_unsupported(config)
        levels = len(config.get("block_out_channels", cls.block_out_channels))
        # diffusers: `num_attention_heads = num_attention_heads or attention_head_dim` (a
        # historical naming slip: in SD v1/v2 configs "attention_head_dim" holds the head count).
        heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
        if isinstance(heads, int):
            heads = (heads,) * levels
        return cls.from_dict({**config, "num_attention_heads": heads})

    def to_diffusers(self, sample_size: int) -> dict:
        """``unet/config.json`` for diffusers' ``UNet2DConditionModel``; ``sample_size``: the latent
        side diffusers generates at by default. The head counts go in "attention_head_dim", where
        SD v1/v2 configs keep them (diffusers refuses "num_attention_heads" for this model)."""
        values = self.to_dict()
        heads = values.pop("num_attention_heads")
        return {"_class_name": "UNet2DConditionModel",
                "_diffusers_version": DIFFUSERS_FORMAT_VERSION, **values,
                "attention_head_dim": heads[0] if len(set(heads)) == 1 else list(heads),
                "num_attention_heads": None, "act_fn": "silu",
                "mid_block_type": "UNetMidBlock2DCrossAttn", "sample_size": int(sample_size)}


def _refuse_unsupported(config):
    problems = []
    if config.get("addition_embed_type") or config.get("class_embed_type"):
        problems.append(
            f"addition_embed_type={config.get('addition_embed_type')!r} / "
            f"class_embed_type={config.get('class_embed_type')!r} (this looks like SDXL or an "
            "upscaler UNet)"
        )
    layers_per_transformer = config.get("transformer_layers_per_block", 1)
    if not isinstance(layers_per_transformer, int):
        problems.append(
            f"per-level transformer_layers_per_block={layers_per_transformer} (this looks like "
            "SDXL)"
        )
    for key in ("only_cross_attention", "dual_cross_attention"):
        value = config.get(key, False)
        if any(value) if isinstance(value, list) else value:
            problems.append(f"{key}={value!r}")
    for key, expected in (("resnet_time_scale_shift", "default"),
                          ("time_embedding_type", "positional"), ("conv_in_kernel", 3),
                          ("conv_out_kernel", 3), ("encoder_hid_dim", None)):
        if config.get(key, expected) != expected:
            problems.append(f"{key}={config[key]!r}")
    for block in config.get("down_block_types", ()):
        if block not in SUPPORTED_DOWN_BLOCKS:
            problems.append(f"down block {block!r}")
    for block in config.get("up_block_types", ()):
        if block not in SUPPORTED_UP_BLOCKS:
            problems.append(f"up block {block!r}")
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        problems.append(f"mid block {config['mid_block_type']!r}")
    if config.get("act_fn", "silu") != "silu":
        problems.append(f"act_fn={config['act_fn']!r}")
    if problems:
        raise ValueError(
            "This UNet config uses features sdlib does not implement: " + "; ".join(problems)
            + ". sdlib runs Stable Diffusion v1/v2-style UNets (UNet2DConditionModel with "
            "CrossAttnDownBlock2D/DownBlock2D blocks)."
        )


def timestep_embedding(timesteps, dim, flip_sin_to_cos=True, freq_shift=0):
    """Sinusoidal embedding of the timestep (Vaswani et al. 2017, sec. 3.5), as diffusers has it.

    freq_i = exp(-ln(10000) * i / (half - freq_shift)); ``flip_sin_to_cos`` puts cos first.
    """
    half = dim // 2
    exponent = -math.log(10000.0) * ops.arange(half, dtype="float32") / (half - freq_shift)
    angles = ops.cast(timesteps, "float32")[:, None] * ops.exp(exponent)[None, :]  # (B, half)
    sin, cos = ops.sin(angles), ops.cos(angles)
    parts = [cos, sin] if flip_sin_to_cos else [sin, cos]
    return ops.concatenate(parts, axis=-1)  # (B, dim)


def guidance_scale_embedding(guidance, dim):
    """Fourier features of the guidance strength w (B,) that a latent-consistency UNet reads beside
    the timestep (Luo et al. 2023, sec. 4.2: the consistency function takes w as an input).

    As diffusers' ``get_guidance_scale_embedding`` (after VDM's timestep embedding, Kingma et al.
    2021): w * 1000, frequencies exp(-i * ln(10000) / (half - 1)), sin before cos, a zero column
    when ``dim`` is odd. Diffusers' pipelines pass w = guidance_scale - 1: the paper's
    eps_cond + w (eps_cond - eps_uncond) is the usual guidance formula at scale w + 1.
    """
    half = dim // 2
    # float32 and in diffusers' order: the angles reach 7000 rad, where rounding shows (1e-4)
    step = np.float32(math.log(10000.0)) / np.float32(half - 1)
    frequencies = ops.exp(ops.arange(half, dtype="float32") * -step)  # (half,)
    angles = (ops.cast(guidance, "float32") * 1000.0)[:, None] * frequencies[None, :]  # (B, half)
    features = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)  # (B, 2 * half)
    if dim % 2:
        features = ops.pad(features, [[0, 0], [0, 1]])  # (B, dim)
    return features


class TimestepEmbedding(keras.layers.Layer):
    """The timestep's MLP, from ``in_channels`` features to ``dim``. With ``condition_dim``, a
    condition (the guidance embedding) is projected onto those features and added first, as
    diffusers' ``cond_proj`` (a linear map without bias)."""

    def __init__(self, dim, in_channels, condition_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.condition_dim = condition_dim
        self.linear_1 = L.dense(dim, dtype=self.dtype_policy)
        self.cond_proj = None if condition_dim is None else L.dense(
            in_channels, use_bias=False, dtype=self.dtype_policy)
        self.linear_2 = L.dense(dim, dtype=self.dtype_policy)

    def build(self, x_shape):
        if self.cond_proj is not None:
            self.cond_proj.build((None, self.condition_dim))
        self.linear_1.build(x_shape)
        self.linear_2.build(L.with_channels(x_shape, self.linear_1.units))

    def call(self, x, condition=None):
        if condition is not None:  # diffusers, too, skips cond_proj without one
            x = x + self.cond_proj(condition)  # (B, C0)
        return self.linear_2(L.silu(self.linear_1(x)))  # (B, 4 * C0)


class Attention(keras.layers.Layer):
    """Multi-head attention; ``context=None`` makes it self-attention."""

    def __init__(self, inner_dim, num_heads, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.num_heads = num_heads
        self.to_q = L.dense(inner_dim, use_bias=False, dtype=dtype)
        self.to_k = L.dense(inner_dim, use_bias=False, dtype=dtype)
        self.to_v = L.dense(inner_dim, use_bias=False, dtype=dtype)
        self.to_out = [L.dense(inner_dim, dtype=dtype)]

    def build(self, x_shape, context_shape=None):
        context_shape = x_shape if context_shape is None else context_shape
        self.to_q.build(x_shape)
        self.to_k.build(context_shape)
        self.to_v.build(context_shape)
        self.to_out[0].build(L.with_channels(x_shape, self.to_q.units))

    def call(self, x, context=None):
        context = x if context is None else context
        out = L.multi_head_attention(
            self.to_q(x), self.to_k(context), self.to_v(context), self.num_heads
        )  # (B, HW, inner)
        return self.to_out[0](out)


class GEGLU(keras.layers.Layer):
    """Gated GELU feed-forward input (Shazeer 2020): ``hidden * gelu(gate)``, exact GELU."""

    def __init__(self, inner_dim, **kwargs):
        super().__init__(**kwargs)
        self.proj = L.dense(inner_dim * 2, dtype=self.dtype_policy)

    def build(self, x_shape):
        self.proj.build(x_shape)

    def call(self, x):
        hidden, gate = ops.split(self.proj(x), 2, axis=-1)
        return hidden * L.gelu(gate)


class FeedForward(keras.layers.Layer):
    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        # `net.1` is dropout in diffusers: keep the index so names match.
        self.net = [GEGLU(dim * 4, dtype=self.dtype_policy), keras.layers.Identity(),
                    L.dense(dim, dtype=self.dtype_policy)]

    def build(self, x_shape):
        self.net[0].build(x_shape)
        self.net[2].build(L.with_channels(x_shape, self.net[0].proj.units // 2))

    def call(self, x):
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(keras.layers.Layer):
    """Self-attention, cross-attention over the text, feed-forward; each pre-norm and residual."""

    def __init__(self, dim, num_heads, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.norm1 = L.layer_norm(1e-5, dtype=dtype)
        self.attn1 = Attention(dim, num_heads, dtype=dtype)
        self.norm2 = L.layer_norm(1e-5, dtype=dtype)
        self.attn2 = Attention(dim, num_heads, dtype=dtype)
        self.norm3 = L.layer_norm(1e-5, dtype=dtype)
        self.ff = FeedForward(dim, dtype=dtype)

    def build(self, x_shape, context_shape):
        for norm in (self.norm1, self.norm2, self.norm3):
            norm.build(x_shape)
        self.attn1.build(x_shape)
        self.attn2.build(x_shape, context_shape)
        self.ff.build(x_shape)

    def call(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(keras.layers.Layer):
    """The spatial transformer: GroupNorm, project in, blocks on the HW tokens, project out."""

    def __init__(self, channels, num_heads, num_layers, groups, use_linear_projection, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.use_linear_projection = use_linear_projection
        self.norm = L.group_norm(groups, 1e-6, dtype=dtype)
        make_proj = (lambda: L.dense(channels, dtype=dtype)) if use_linear_projection else (
            lambda: L.conv2d(channels, 1, dtype=dtype))
        self.proj_in = make_proj()
        self.transformer_blocks = [
            BasicTransformerBlock(channels, num_heads, dtype=dtype) for _ in range(num_layers)
        ]
        self.proj_out = make_proj()

    def build(self, x_shape, context_shape):
        self.norm.build(x_shape)
        tokens_shape = (x_shape[0], None, x_shape[-1])  # (B, HW, C)
        projected_shape = tokens_shape if self.use_linear_projection else x_shape
        self.proj_in.build(projected_shape)
        for block in self.transformer_blocks:
            block.build(tokens_shape, context_shape)
        self.proj_out.build(projected_shape)

    def call(self, x, context):
        batch, height, width, channels = ops.shape(x)
        residual = x
        x = self.norm(x)
        if not self.use_linear_projection:
            x = self.proj_in(x)
        x = ops.reshape(x, (batch, height * width, channels))  # (B, HW, C)
        if self.use_linear_projection:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear_projection:
            x = self.proj_out(x)
        x = ops.reshape(x, (batch, height, width, channels))  # (B, H, W, C)
        if not self.use_linear_projection:
            x = self.proj_out(x)
        return x + residual


class UNetLevel(keras.layers.Layer):
    """One resolution level: ResNet blocks, each then a spatial transformer if ``attention``."""

    def __init__(self, channels, num_layers, attention, num_heads, config, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.resnets = [
            L.ResnetBlock2D(channels, config.norm_num_groups, config.norm_eps, dtype=dtype)
            for _ in range(num_layers)
        ]
        self.attentions = [
            Transformer2DModel(channels, num_heads, config.transformer_layers_per_block,
                               config.norm_num_groups, config.use_linear_projection, dtype=dtype)
            for _ in range(num_layers)
        ] if attention else []

    def build_level(self, x_shape, time_embedding_shape, context_shape, skip_shapes=()):
        """Build the ResNet blocks and transformers; an up level's blocks each take one skip."""
        skip_shapes = list(skip_shapes)
        for index, resnet in enumerate(self.resnets):
            if skip_shapes:
                x_shape = L.with_channels(x_shape, x_shape[-1] + skip_shapes.pop()[-1])
            resnet.build(x_shape, time_embedding_shape)
            x_shape = L.with_channels(x_shape, resnet.out_channels)
            if self.attentions:
                self.attentions[index].build(x_shape, context_shape)
        return x_shape


class DownBlock(UNetLevel):
    def __init__(self, channels, num_heads, attention, add_downsample, config, **kwargs):
        super().__init__(channels, config.layers_per_block, attention, num_heads, config, **kwargs)
        padding = config.downsample_padding
        self.downsamplers = [
            L.Downsample2D(channels, padding=(padding, padding), dtype=self.dtype_policy)
        ] if add_downsample else []

    def build(self, x_shape, time_embedding_shape, context_shape):
        x_shape = self.build_level(x_shape, time_embedding_shape, context_shape)
        for downsampler in self.downsamplers:
            downsampler.build(x_shape)

    def call(self, x, time_embedding, context):
        skips = []
        for index, resnet in enumerate(self.resnets):
            x = resnet(x, time_embedding)
            if self.attentions:
                x = self.attentions[index](x, context)
            skips.append(x)
        for downsampler in self.downsamplers:
            x = downsampler(x)  # Downsample 2x
            skips.append(x)
        return x, skips


class UpBlock(UNetLevel):
    def __init__(self, channels, num_heads, attention, add_upsample, config, **kwargs):
        num_layers = config.layers_per_block + 1  # one more: the downsampler's skip
        super().__init__(channels, num_layers, attention, num_heads, config, **kwargs)
        self.upsamplers = [
            L.Upsample2D(channels, dtype=self.dtype_policy)
        ] if add_upsample else []

    def build(self, x_shape, skips_shape, time_embedding_shape, context_shape):
        x_shape = self.build_level(x_shape, time_embedding_shape, context_shape, skips_shape)
        for upsampler in self.upsamplers:
            upsampler.build(x_shape)

    def call(self, x, skips, time_embedding, context, next_skip=None):
        """``next_skip``: the skip the level above takes first; the upsampler matches its size."""
        for index, resnet in enumerate(self.resnets):
            x = ops.concatenate([x, skips.pop()], axis=-1)  # (B, H, W, C + C_skip)
            x = resnet(x, time_embedding)
            if self.attentions:
                x = self.attentions[index](x, context)
        for upsampler in self.upsamplers:
            output_size = None if next_skip is None else tuple(next_skip.shape[1:3])
            if output_size is None or output_size == (2 * x.shape[1], 2 * x.shape[2]):
                x = upsampler(x)  # Upsample 2x
            else:
                # Odd latent sizes: the next skip is not exactly twice as large; match it.
                x = upsampler.conv(L.nearest_resize(x, output_size))
        return x


class MidBlock(keras.layers.Layer):
    def __init__(self, channels, num_heads, config, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.attentions = [
            Transformer2DModel(channels, num_heads, config.transformer_layers_per_block,
                               config.norm_num_groups, config.use_linear_projection, dtype=dtype)
        ]
        self.resnets = [
            L.ResnetBlock2D(channels, config.norm_num_groups, config.norm_eps, dtype=dtype)
            for _ in range(2)
        ]

    def build(self, x_shape, time_embedding_shape, context_shape):
        self.resnets[0].build(x_shape, time_embedding_shape)
        self.attentions[0].build(x_shape, context_shape)
        self.resnets[1].build(x_shape, time_embedding_shape)

    def call(self, x, time_embedding, context):
        x = self.resnets[0](x, time_embedding)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, time_embedding)


@keras.saving.register_keras_serializable(package="sdlib")
class UNet(ConfiguredModel):
    """Predicts the noise in a latent: (latent (B, h, w, C), timestep (B,), context (B, 77, D)),
    and with ``time_cond_proj_dim`` in the config optionally ``timestep_cond`` (B,
    time_cond_proj_dim): the guidance embedding (``guidance_scale_embedding``)."""

    config_class = UNetConfig

    def __init__(self, config: UNetConfig, **kwargs):
        super().__init__(config, **kwargs)
        dtype = self.dtype_policy
        channels = config.block_out_channels
        levels = len(channels)
        time_dim = channels[0] * 4
        # === Layers ===
        self.conv_in = L.conv2d(channels[0], 3, dtype=dtype)
        self.time_embedding = TimestepEmbedding(time_dim, channels[0], config.time_cond_proj_dim,
                                                dtype=dtype)
        self.down_blocks = [
            DownBlock(channels[i], config.num_attention_heads[i],
                      config.down_block_types[i] == "CrossAttnDownBlock2D",
                      add_downsample=i < levels - 1, config=config, dtype=dtype)
            for i in range(levels)
        ]
        self.mid_block = MidBlock(channels[-1], config.num_attention_heads[-1], config, dtype=dtype)
        reversed_heads = config.num_attention_heads[::-1]
        self.up_blocks = [
            UpBlock(channels[levels - 1 - i], reversed_heads[i],
                    config.up_block_types[i] == "CrossAttnUpBlock2D",
                    add_upsample=i < levels - 1, config=config, dtype=dtype)
            for i in range(levels)
        ]
        self.conv_norm_out = L.group_norm(config.norm_num_groups, config.norm_eps, dtype=dtype)
        self.conv_out = L.conv2d(config.out_channels, 3, dtype=dtype)

    def build(self, latent_shape, timesteps_shape=None, context_shape=None):
        """Create every weight from the input shapes (no forward pass); the skips' channels are
        tracked exactly as ``call`` stacks and pops them."""
        channels = self.config.block_out_channels
        self.time_embedding.build((None, channels[0]))
        time_embedding_shape = (None, self.time_embedding.linear_2.units)
        self.conv_in.build(latent_shape)
        x_shape = L.image_shape(channels[0])
        skip_shapes = [x_shape]
        for block in self.down_blocks:
            block.build(x_shape, time_embedding_shape, context_shape)
            x_shape = L.image_shape(block.resnets[-1].out_channels)
            skip_shapes += [x_shape] * (len(block.resnets) + len(block.downsamplers))
        self.mid_block.build(x_shape, time_embedding_shape, context_shape)
        for block in self.up_blocks:
            count = len(block.resnets)
            block_skips, skip_shapes = skip_shapes[-count:], skip_shapes[:-count]
            block.build(x_shape, block_skips, time_embedding_shape, context_shape)
            x_shape = L.image_shape(block.resnets[-1].out_channels)
        self.conv_norm_out.build(x_shape)
        self.conv_out.build(x_shape)

    def call(self, latent, timesteps, context, timestep_cond=None):
        config = self.config
        if timestep_cond is not None:
            if config.time_cond_proj_dim is None:
                raise ValueError("timestep_cond was given, but this UNet has no time_cond_proj_dim "
                                 "(it does not embed a guidance scale): leave it None.")
            timestep_cond = ops.cast(timestep_cond, self.compute_dtype)  # (B, time_cond_proj_dim)
        t_emb = timestep_embedding(
            timesteps, config.block_out_channels[0], config.flip_sin_to_cos, config.freq_shift
        )  # (B, C0)
        t_emb = self.time_embedding(ops.cast(t_emb, self.compute_dtype),
                                    timestep_cond)  # (B, 4 * C0)
        x = self.conv_in(latent)  # (B, h, w, C0)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, t_emb, context)
            skips.extend(block_skips)
        x = self.mid_block(x, t_emb, context)  # (B, h / 2^(L-1), w / 2^(L-1), C_last)
        for block in self.up_blocks:
            count = len(block.resnets)
            block_skips, skips = skips[-count:], skips[:-count]
            x = block(x, block_skips, t_emb, context, next_skip=skips[-1] if skips else None)
        x = L.silu(self.conv_norm_out(x))
        return self.conv_out(x)  # (B, h, w, C_out)

    def build_weights(self, context_length=77):
        self.build(L.image_shape(self.config.in_channels), (None,),
                   (None, context_length, self.config.cross_attention_dim))
        return self
