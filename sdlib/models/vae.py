"""The KL-regularised autoencoder: images to latents and back (Rombach et al. 2022, sec. 3).

With SD v1's four levels an image (B, 512, 512, 3) becomes a latent (B, 64, 64, 4): the diffusion
runs there, 48x fewer values. Layer names follow diffusers' ``AutoencoderKL``. NHWC.
"""

import dataclasses

import keras
from keras import ops

from sdlib.config import DIFFUSERS_FORMAT_VERSION, Config
from sdlib.models import layers as L
from sdlib.models.base import ConfiguredModel


@dataclasses.dataclass(frozen=True)
class VAEConfig(Config):
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    @property
    def scale_factor(self) -> int:
        """How many image pixels one latent pixel covers per side: 2 ** (levels - 1)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, config: dict) -> "VAEConfig":
        for key, expected in (("act_fn", "silu"),):
            if config.get(key, expected) != expected:
                raise ValueError(f"VAE config {key}={config[key]!r} is not supported (expected "
                                 f"{expected!r}).")
        for key, allowed in (("down_block_types", "DownEncoderBlock2D"),
                             ("up_block_types", "UpDecoderBlock2D")):
            unknown = [block for block in config.get(key, ()) if block != allowed]
            if unknown:
                raise ValueError(f"VAE {key} {unknown} are not supported; sdlib implements "
                                 f"{allowed} (an AutoencoderKL as in SD v1/v2).")
        return cls.from_dict(config)

    def to_diffusers(self, sample_size: int) -> dict:
        """``vae/config.json`` for diffusers' ``AutoencoderKL``; ``sample_size``: the image side."""
        levels = len(self.block_out_channels)
        return {"_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_FORMAT_VERSION,
                **self.to_dict(), "act_fn": "silu",
                "down_block_types": ["DownEncoderBlock2D"] * levels,
                "up_block_types": ["UpDecoderBlock2D"] * levels, "sample_size": int(sample_size)}


class VAEAttention(keras.layers.Layer):
    """Single-head self-attention over all pixels, with its own GroupNorm and a residual."""

    def __init__(self, channels, groups, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.group_norm = L.group_norm(groups, 1e-6, dtype=dtype)
        self.to_q = L.dense(channels, dtype=dtype)
        self.to_k = L.dense(channels, dtype=dtype)
        self.to_v = L.dense(channels, dtype=dtype)
        self.to_out = [L.dense(channels, dtype=dtype)]

    def build(self, x_shape):
        self.group_norm.build(x_shape)
        tokens_shape = (x_shape[0], None, x_shape[-1])  # (B, HW, C)
        for dense in (self.to_q, self.to_k, self.to_v, self.to_out[0]):
            dense.build(tokens_shape)

    def call(self, x):
        batch, height, width, channels = ops.shape(x)
        h = ops.reshape(self.group_norm(x), (batch, height * width, channels))  # (B, HW, C)
        h = L.multi_head_attention(self.to_q(h), self.to_k(h), self.to_v(h), num_heads=1)
        h = self.to_out[0](h)
        return x + ops.reshape(h, (batch, height, width, channels))


class VAEMidBlock(keras.layers.Layer):
    def __init__(self, channels, groups, add_attention, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.attentions = [VAEAttention(channels, groups, dtype=dtype)] if add_attention else []
        self.resnets = [
            L.ResnetBlock2D(channels, groups, 1e-6, use_time_embedding=False, dtype=dtype)
            for _ in range(2)
        ]

    def build(self, x_shape):
        self.resnets[0].build(x_shape)
        for attention in self.attentions:
            attention.build(x_shape)
        self.resnets[1].build(x_shape)

    def call(self, x):
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class VAELevel(keras.layers.Layer):
    """ResNet blocks at one resolution, then an optional down- or upsampler."""

    def __init__(self, channels, num_layers, groups, resample=None, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.resnets = [
            L.ResnetBlock2D(channels, groups, 1e-6, use_time_embedding=False, dtype=dtype)
            for _ in range(num_layers)
        ]
        if resample == "down":
            # The VAE pads only after: (0, 1) on each spatial axis.
            self.downsamplers = [L.Downsample2D(channels, padding=(0, 1), dtype=dtype)]
        elif resample == "up":
            self.upsamplers = [L.Upsample2D(channels, dtype=dtype)]
        self.resample = resample

    def build(self, x_shape):
        for resnet in self.resnets:
            resnet.build(x_shape)
            x_shape = L.with_channels(x_shape, resnet.out_channels)
        if self.resample == "down":
            self.downsamplers[0].build(x_shape)
        elif self.resample == "up":
            self.upsamplers[0].build(x_shape)

    def call(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.resample == "down":
            x = self.downsamplers[0](x)  # Downsample 2x
        elif self.resample == "up":
            x = self.upsamplers[0](x)  # Upsample 2x
        return x


class VAEEncoder(keras.layers.Layer):
    """Image (B, H, W, 3) in [-1, 1] -> moments (B, H/f, W/f, 2 * C_latent), before quant_conv."""

    def __init__(self, config: VAEConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        channels, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = L.conv2d(channels[0], 3, dtype=dtype)
        self.down_blocks = [
            VAELevel(channels[i], config.layers_per_block, groups,
                     resample="down" if i < len(channels) - 1 else None, dtype=dtype)
            for i in range(len(channels))
        ]
        self.mid_block = VAEMidBlock(channels[-1], groups, config.mid_block_add_attention,
                                     dtype=dtype)
        self.conv_norm_out = L.group_norm(groups, 1e-6, dtype=dtype)
        self.conv_out = L.conv2d(2 * config.latent_channels, 3, dtype=dtype)

    def build(self, image_shape):
        self.conv_in.build(image_shape)
        x_shape = L.image_shape(self.conv_in.filters)
        for block in self.down_blocks:
            block.build(x_shape)
            x_shape = L.image_shape(block.resnets[-1].out_channels)
        self.mid_block.build(x_shape)
        self.conv_norm_out.build(x_shape)
        self.conv_out.build(x_shape)

    def call(self, image):
        x = self.conv_in(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(L.silu(self.conv_norm_out(x)))  # (B, H/f, W/f, 2 * C_latent)


class VAEDecoder(keras.layers.Layer):
    """Latent (B, h, w, C), after post_quant_conv -> image (B, h * f, w * f, 3), about [-1, 1]."""

    def __init__(self, config: VAEConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        channels, groups = config.block_out_channels[::-1], config.norm_num_groups
        self.conv_in = L.conv2d(channels[0], 3, dtype=dtype)
        self.mid_block = VAEMidBlock(channels[0], groups, config.mid_block_add_attention,
                                     dtype=dtype)
        self.up_blocks = [
            VAELevel(channels[i], config.layers_per_block + 1, groups,
                     resample="up" if i < len(channels) - 1 else None, dtype=dtype)
            for i in range(len(channels))
        ]
        self.conv_norm_out = L.group_norm(groups, 1e-6, dtype=dtype)
        self.conv_out = L.conv2d(config.out_channels, 3, dtype=dtype)

    def build(self, latent_shape):
        self.conv_in.build(latent_shape)
        x_shape = L.image_shape(self.conv_in.filters)
        self.mid_block.build(x_shape)
        for block in self.up_blocks:
            block.build(x_shape)
            x_shape = L.image_shape(block.resnets[-1].out_channels)
        self.conv_norm_out.build(x_shape)
        self.conv_out.build(x_shape)

    def call(self, latent):
        x = self.conv_in(latent)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(L.silu(self.conv_norm_out(x)))


@keras.saving.register_keras_serializable(package="sdlib")
class AutoencoderKL(ConfiguredModel):
    """``encode``: image -> (mean, logvar) of the latent; ``decode``: latent -> image. Unscaled."""

    config_class = VAEConfig

    def __init__(self, config: VAEConfig, **kwargs):
        super().__init__(config, **kwargs)
        dtype = self.dtype_policy
        # === Layers ===
        self.encoder = VAEEncoder(config, dtype=dtype)
        self.decoder = VAEDecoder(config, dtype=dtype)
        moments = 2 * config.latent_channels
        self.quant_conv = L.conv2d(moments, 1, dtype=dtype) if config.use_quant_conv else None
        self.post_quant_conv = (L.conv2d(config.latent_channels, 1, dtype=dtype)
                                if config.use_post_quant_conv else None)

    def build(self, image_shape):
        latent_shape = L.image_shape(self.config.latent_channels)
        self.encoder.build(image_shape)
        if self.quant_conv is not None:
            self.quant_conv.build(L.image_shape(2 * self.config.latent_channels))
        if self.post_quant_conv is not None:
            self.post_quant_conv.build(latent_shape)
        self.decoder.build(latent_shape)

    def encode(self, image):
        moments = self.encoder(image)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = ops.split(moments, 2, axis=-1)  # 2 x (B, h, w, C_latent)
        return mean, ops.clip(logvar, -30.0, 20.0)

    def decode(self, latent):
        if self.post_quant_conv is not None:
            latent = self.post_quant_conv(latent)
        return self.decoder(latent)

    def call(self, image):
        mean, _ = self.encode(image)
        return self.decode(mean)

    def build_weights(self):
        self.build(L.image_shape(self.config.in_channels))
        return self
