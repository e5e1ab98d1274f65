"""The three networks of Stable Diffusion v1 in pure Keras 3 (no file I/O): the CLIP text encoder,
the UNet and the VAE, with the building blocks they share. Layer names follow diffusers and
transformers, so checkpoints load without a name table."""
