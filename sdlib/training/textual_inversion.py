"""Textual inversion (Gal et al. 2022, "An Image is Worth One Word", Sec. 3): learn the vectors of
a new token so that the frozen text encoder and UNet denoise a handful of images of a concept
when the caption holds the token. Only those vectors train; everything else stays as it is, so
the result is a small file (``{"<token>": (n, D)}``, diffusers' format) that any copy of the base
model can load (``pipe.load_textual_inversion``). Any model, any data.
"""

import keras
import numpy as np
from keras import ops
from safetensors.numpy import save_file

from sdlib.sampling.schedule import alphas_cumprod
from sdlib.training.diffusion import NoisedLatents, PrintEvery, cosine_schedule


class InversionTrainer(keras.Model):
    """The frozen text encoder and UNet, with ``vectors`` (n, D) standing in for the rows of
    ``token_ids`` in the token table: the diffusion loss reaches only them."""

    def __init__(self, text_encoder, unet, token_ids, initial_vectors, **kwargs):
        super().__init__(**kwargs)
        self.text_encoder, self.unet = text_encoder, unet
        self.token_ids = [int(token_id) for token_id in token_ids]
        self.vectors = self.add_weight(
            shape=initial_vectors.shape, name="vectors",
            initializer=keras.initializers.Constant(initial_vectors))

    def call(self, inputs):
        ids = inputs["token_ids"]  # (B, T)
        vectors = self.text_encoder.embeddings.token_embedding(ids)  # (B, T, D), frozen
        for index, token_id in enumerate(self.token_ids):
            here = ops.cast(ops.equal(ids, token_id), vectors.dtype)[..., None]  # (B, T, 1)
            vectors = vectors * (1.0 - here) + here * ops.cast(self.vectors[index], vectors.dtype)
        context = self.text_encoder.from_token_vectors(vectors)  # (B, T, D)
        return self.unet(inputs["noisy_latents"], inputs["timesteps"], context)


def train_textual_inversion(text_encoder, unet, latents, token_ids, empty_ids, scheduler_config,
                            new_token_ids, initial_vectors, steps, batch_size=16,
                            learning_rate=5e-3, seed=0, log_every=100, jit_compile=True):
    """Learn the vectors (n, D) of ``new_token_ids`` (already in the tokenizer; the text encoder's
    table may or may not have rows for them) from scaled latents and captions that use them.
    Returns the vectors, float32."""
    keras.utils.set_random_seed(seed)
    was = text_encoder.trainable, unet.trainable
    text_encoder.trainable = unet.trainable = False
    trainer = InversionTrainer(text_encoder, unet, new_token_ids,
                               np.asarray(initial_vectors, np.float32))
    # No caption dropout: an empty caption holds no token, so it would teach the vectors nothing.
    data = NoisedLatents(latents, token_ids, empty_ids, alphas_cumprod(scheduler_config),
                         batch_size, steps, seed, caption_dropout=0.0,
                         prediction_type=scheduler_config.prediction_type)
    optimizer = keras.optimizers.Adam(cosine_schedule(learning_rate, steps, min(50, steps // 5)))
    trainer.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    try:
        trainer.fit(data, epochs=1, verbose=0, callbacks=[PrintEvery(log_every, "inversion")])
    finally:
        text_encoder.trainable, unet.trainable = was
    return ops.convert_to_numpy(trainer.vectors).astype(np.float32)


def save_embedding_file(token, vectors, path):
    """``{token: (n, D)}`` as diffusers' ``save_textual_inversion`` writes it (safetensors)."""
    save_file({token: np.ascontiguousarray(vectors, np.float32)}, str(path))
