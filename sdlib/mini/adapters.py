"""Teaching mini-shapes new things with adapters: a LoRA for the four (color, shape) pairs its
training never showed (``shapes.HELD_OUT``), and a new word by textual inversion.

The LoRA sees those pairs beside as many seen ones, so it learns the new pairs without unlearning
the old (the judge checks both). ``tools/train_mini_lora.py`` runs the recipe and writes the
shipped file, which ``pipe.load_lora_weights("mini-shapes-held-out")`` loads by name. The new
word, ``<my-favourite>``, is one vector learned from eight pictures of purple triangles:
it can name what the model already draws, not teach it to draw something new.
"""

import copy
import dataclasses
import time

import keras
import numpy as np

from sdlib.mini import shapes
from sdlib.training.autoencoder import encode_latents
from sdlib.training.consistency import distill_lcm_lora
from sdlib.training.lora import TEXT_TARGETS, copy_model, train_lora
from sdlib.training.textual_inversion import train_textual_inversion


def held_out_examples(num_images, rng, held_out_share=0.5, canonical_share=0.0):
    """Images and captions: ``held_out_share`` of them in a held-out (color, shape) pair, the rest
    in the pairs the base model learned; ``canonical_share`` of the captions canonical (every
    attribute named), the rest varied as in the base model's training."""
    num_held = int(round(num_images * held_out_share))
    specs = shapes.sample_specs(num_images - num_held, rng, include_held_out=False)
    pairs = rng.integers(len(shapes.HELD_OUT), size=num_held)
    for pair, spec in zip(pairs, shapes.sample_specs(num_held, rng, include_held_out=True),
                          strict=True):
        color, shape = shapes.HELD_OUT[pair]
        specs.append(dataclasses.replace(spec, color=color, shape=shape))
    order = rng.permutation(len(specs))
    specs = [specs[index] for index in order]
    images = np.stack([shapes.render(spec, rng) for spec in specs])  # (N, 64, 64, 3)
    captions = [shapes.canonical_caption(spec) if rng.random() < canonical_share
                else shapes.varied_caption(spec, rng) for spec in specs]
    return images, captions


def train_held_out_lora(components, num_images=4000, steps=400, batch_size=32, rank=4,
                        learning_rate=2e-3, text_encoder=True, held_out_share=0.5, seed=0,
                        jit_compile=True, log=print, log_every=100):
    """A LoRA of the UNet and (``text_encoder``) the text encoder that teaches ``components``
    (mini-shapes) the held-out pairs. Returns the updates, ``{(component, layer): LoraModule}``,
    for ``save_lora_file``."""
    start = time.time()
    rng = np.random.default_rng(seed)
    images, captions = held_out_examples(num_images, rng, held_out_share)
    latents = encode_latents(components.vae, images) * components.vae.config.scaling_factor
    tokenizer = components.tokenizer
    log(f"data: {num_images} images and latents in {time.time() - start:.0f} s")
    stage = time.time()
    modules = train_lora(components.text_encoder, components.unet, latents, tokenizer(captions),
                         tokenizer([""])[0], components.scheduler_config, steps=steps, rank=rank,
                         alpha=float(rank), batch_size=batch_size, learning_rate=learning_rate,
                         text_targets=TEXT_TARGETS if text_encoder else (), seed=seed,
                         log_every=log_every, jit_compile=jit_compile)
    log(f"LoRA trained in {time.time() - stage:.0f} s ({steps} steps of {batch_size}, rank {rank}, "
        f"{len(modules)} layers)")
    return modules


# === A new word: textual inversion ===
CONCEPT = shapes.ShapeSpec("triangle", "purple", "large", "center", "white")  # shape, color, ...
TOKEN = "<my-favourite>"


def concept_captions(specs, token=TOKEN):
    """Canonical captions with the token in place of "<color> <shape>"."""
    return [shapes.canonical_caption(spec).replace(f"{spec.color} {spec.shape}", token)
            for spec in specs]


def concept_specs(num, rng, concept=CONCEPT):
    """Random specs of the concept's color and shape (size, position, background vary)."""
    return [dataclasses.replace(spec, color=concept.color, shape=concept.shape)
            for spec in shapes.sample_specs(num, rng, include_held_out=True)]


def train_new_word(components, concept=CONCEPT, token=TOKEN, num_images=8, steps=300,
                   batch_size=16, learning_rate=5e-3, seed=0, initializer="shape", log=print,
                   log_every=100):
    """Learn one vector for ``token`` from ``num_images`` images of ``concept``'s color and
    shape, with everything in ``components`` frozen (and left as it is: the training runs on a
    copy of the tokenizer and of the text encoder, whose table gets one row). Returns the vector
    (1, D), for ``save_embedding_file``."""
    start = time.time()
    rng = np.random.default_rng(seed)
    specs = concept_specs(num_images, rng, concept)
    images = np.stack([shapes.render(spec, rng) for spec in specs])  # (n, 64, 64, 3)
    latents = encode_latents(components.vae, images) * components.vae.config.scaling_factor
    tokenizer = copy.deepcopy(components.tokenizer)
    (token_id,) = tokenizer.add_tokens([token])
    text_encoder = copy_model(components.text_encoder)
    text_encoder.resize_token_embeddings(len(tokenizer))
    start_ids = tokenizer.encode(initializer)  # the vector starts as this word's
    table = keras.ops.convert_to_numpy(text_encoder.embeddings.token_embedding.embeddings)
    initial = table[start_ids].mean(axis=0, keepdims=True)  # (1, D)
    log(f"data: {num_images} images of a {concept.color} {concept.shape} in "
        f"{time.time() - start:.0f} s")
    stage = time.time()
    vectors = train_textual_inversion(
        text_encoder, components.unet, latents, tokenizer(concept_captions(specs, token)),
        tokenizer([""])[0], components.scheduler_config, [token_id], initial, steps=steps,
        batch_size=batch_size, learning_rate=learning_rate, seed=seed, log_every=log_every)
    log(f"embedding learned in {time.time() - stage:.0f} s ({steps} steps of {batch_size})")
    return vectors


def measure_new_word(pipe, judge, num_prompts, concept=CONCEPT, token=TOKEN, seed=0,
                     batch_size=20, **kwargs):
    """Prompts that use the token (random size, position, background), the images ``pipe``
    makes of them, and the judge's scores: "concept" = color and shape are the concept's, and
    the attributes the prompt names. Returns ``(scores, prompts, images)``."""
    rng = np.random.default_rng(seed + 7919)
    specs = concept_specs(num_prompts, rng, concept)
    prompts = concept_captions(specs, token)
    images = np.concatenate([
        pipe.text_to_image(prompts[start:start + batch_size], seed=seed + index, verbose=False,
                           **kwargs)
        for index, start in enumerate(range(0, len(prompts), batch_size))])
    predicted = judge.predict(images)
    wanted = shapes.labels_of(specs)
    correct = {attr: predicted[attr] == wanted[attr] for attr in shapes.ATTRIBUTES}
    scores = {attr: float(hits.mean()) for attr, hits in correct.items()}
    scores["concept"] = float((correct["color"] & correct["shape"]).mean())
    scores["all"] = float(np.logical_and.reduce(list(correct.values())).mean())
    return scores, prompts, images


# === Fewer steps: an LCM-LoRA ===
def train_lcm_lora(components, num_images=4000, steps=1200, batch_size=32, rank=16,
                   learning_rate=3e-4, guidance=(7.5, 7.5), ema_decay=0.95, seed=0,
                   jit_compile=True, log=print, log_every=100):
    """An LCM-LoRA of mini-shapes' UNet by latent consistency distillation from itself, on
    pictures of the pairs it was trained on with their varied captions, against an EMA target
    (``ema_decay``; None: the student itself). Returns the updates for ``save_lora_file``;
    ``pipe.load_lora_weights(file)`` and ``sampler="lcm"`` at guidance 1 then draw in 1-8 steps.
    The defaults made the shipped ``"mini-shapes-lcm"``."""
    start = time.time()
    rng = np.random.default_rng(seed)
    images, captions = held_out_examples(num_images, rng, held_out_share=0.0)
    latents = encode_latents(components.vae, images) * components.vae.config.scaling_factor
    tokenizer = components.tokenizer
    log(f"data: {num_images} images and latents in {time.time() - start:.0f} s")
    stage = time.time()
    modules = distill_lcm_lora(components.text_encoder, components.unet, latents,
                               tokenizer(captions), tokenizer([""])[0],
                               components.scheduler_config, steps=steps, rank=rank,
                               guidance=guidance, batch_size=batch_size,
                               learning_rate=learning_rate, ema_decay=ema_decay, seed=seed,
                               log_every=log_every, jit_compile=jit_compile)
    log(f"LCM-LoRA distilled in {time.time() - stage:.0f} s ({steps} steps of {batch_size}, "
        f"rank {rank}, {len(modules)} layers)")
    return modules
