"""Training code that works for any model and any data: the autoencoder (``autoencoder``) and the
latent diffusion model (``diffusion``), as ``keras.Model.fit``."""
