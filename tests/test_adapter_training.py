"""Training adapters on the tiny preset: what Keras' enable_lora learned is what the LoRA file
holds (the same UNet output once loaded), the models trained against are left unchanged, and a
learned embedding, saved and loaded, encodes prompts as it did in training."""

import copy

import numpy as np
import pytest
from keras import ops

import sdlib
from sdlib.loading.lora import read_lora_file, save_lora_file
from sdlib.training.lora import copy_model, enable_lora, lora_modules, train_lora
from sdlib.training.textual_inversion import save_embedding_file, train_textual_inversion


@pytest.fixture(scope="module")
def pipe():
    return sdlib.StableDiffusion.from_preset("tiny", img_height=32, img_width=32,
                                             jit_compile=False)


def unet_inputs(pipe, seed=0):
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    context = pipe.encode_text(["a red circle", "a blue square"])
    return latents, np.array([10, 500], np.int32), context


def test_keras_lora_layers_and_the_saved_file_give_the_same_unet(pipe, tmp_path):
    twin = copy_model(pipe.unet, pipe.text_encoder.config.max_position_embeddings)
    layers = enable_lora(twin, rank=2, alpha=3.0, targets=("to_q", "to_v", "proj_in", "conv1"))
    rng = np.random.default_rng(0)
    for _, layer in layers:  # B starts at zero: give both factors values
        for variable in (layer.lora_kernel_a, layer.lora_kernel_b):
            variable.assign(0.2 * rng.standard_normal(variable.shape).astype(np.float32))
    kinds = {type(layer).__name__ for _, layer in layers}
    assert kinds == {"Dense", "Conv2D"}  # linear, 1x1 and 3x3 conv updates all covered
    path = tmp_path / "lora.safetensors"
    save_lora_file(lora_modules("unet", layers), path)
    assert read_lora_file(path).format == "peft"
    latents, timesteps, context = unet_inputs(pipe)
    base = ops.convert_to_numpy(pipe.unet(latents, timesteps, context))
    pipe.load_lora_weights(str(path))
    try:
        ours = ops.convert_to_numpy(pipe.unet(latents, timesteps, context))
        theirs = ops.convert_to_numpy(twin(latents, timesteps, context))
    finally:
        pipe.unload_lora_weights()
    assert np.abs(ours - base).max() > 1e-2  # the update does something
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def tiny_data(pipe, n=8):
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((n, 4, 4, 4)).astype(np.float32)
    return latents, pipe.tokenizer(["a red circle"] * n), pipe.tokenizer([""])[0]


def test_train_lora_returns_updates_and_leaves_the_models_alone(pipe):
    before = [np.array(v.numpy()) for v in pipe.unet.weights]
    latents, ids, empty = tiny_data(pipe)
    modules = train_lora(pipe.text_encoder, pipe.unet, latents, ids, empty,
                         pipe.components.scheduler_config, steps=3, rank=2, batch_size=4,
                         jit_compile=False)
    assert modules and all(update.rank == 2 for update in modules.values())
    assert any(np.abs(update.up).max() > 0 for update in modules.values())  # B moved off zero
    after = [np.array(v.numpy()) for v in pipe.unet.weights]
    assert all(np.array_equal(x, y) for x, y in zip(before, after, strict=True))


def test_a_learned_embedding_loads_and_encodes_as_in_training(pipe, tmp_path):
    tokenizer = copy.deepcopy(pipe.tokenizer)
    (token_id,) = tokenizer.add_tokens(["<new>"])
    text_encoder = copy_model(pipe.text_encoder)
    text_encoder.resize_token_embeddings(len(tokenizer))
    latents, _, empty = tiny_data(pipe)
    ids = tokenizer(["a <new> in the top left"] * len(latents))
    initial = np.zeros((1, pipe.text_encoder.config.hidden_size), np.float32)
    vectors = train_textual_inversion(text_encoder, pipe.unet, latents, ids, empty,
                                      pipe.components.scheduler_config, [token_id], initial,
                                      steps=3, batch_size=4, jit_compile=False)
    assert vectors.shape == initial.shape and np.abs(vectors).max() > 0
    assert len(pipe.tokenizer) == pipe.tokenizer.vocab_size  # the pipeline's own is untouched
    save_embedding_file("<new>", vectors, tmp_path / "new.safetensors")
    pipe.load_textual_inversion(str(tmp_path / "new.safetensors"))  # (this module's last test)
    table = text_encoder.embeddings.token_embedding(ids[:1])
    here = (ids[:1] == token_id)[..., None]
    trained = text_encoder.from_token_vectors(np.where(here, vectors[0], table))
    np.testing.assert_allclose(pipe.encode_text("a <new> in the top left"),
                               ops.convert_to_numpy(trained), atol=1e-5)
