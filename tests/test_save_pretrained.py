"""``pipe.save_pretrained(folder)`` writes the diffusers layout: checked here against the files
diffusers itself wrote for the tiny fixtures (same tensor names, shapes and values, same configs),
and by loading the folder back. That diffusers opens our folders and gives the same images is
checked by hand with torch: ``tools/check_diffusers_interop.py``.
"""

import json

import numpy as np
import pytest

import sdlib
from sdlib.loading.safetensors import read_metadata, read_safetensors

WEIGHTS = {"unet": "unet/diffusion_pytorch_model.safetensors",
           "vae": "vae/diffusion_pytorch_model.safetensors",
           "text_encoder": "text_encoder/model.safetensors"}


def load(folder, **kwargs):
    return sdlib.StableDiffusion.from_pretrained(str(folder), img_height=32, img_width=48,
                                                 jit_compile=False, **kwargs)


def image(pipe, prompt="a photo of a cat"):
    return pipe.text_to_image(prompt, num_steps=3, seed=7, verbose=False)


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    return load(fixtures_dir / "tiny-sd")


def read_config(folder, component):
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((folder / component / name).read_text())


@pytest.mark.parametrize("fixture", ["tiny-sd", "tiny-sd-inpaint"])
def test_the_folder_holds_what_diffusers_wrote(fixtures_dir, tmp_path, fixture):
    original = fixtures_dir / fixture
    load(original).save_pretrained(tmp_path)
    for component, relative in WEIGHTS.items():
        theirs = {key.removeprefix("text_model."): value
                  for key, value in read_safetensors(original / relative).items()
                  if not key.endswith("position_ids")}
        ours = read_safetensors(tmp_path / relative)
        if component == "text_encoder":  # the prefix real SD v1 files have
            assert all(key.startswith("text_model.") for key in ours)
            ours = {key.removeprefix("text_model."): value for key, value in ours.items()}
        assert sorted(ours) == sorted(theirs)
        for key, value in theirs.items():
            assert ours[key].shape == value.shape, key
            np.testing.assert_array_equal(ours[key], value, err_msg=key)
        assert read_metadata(tmp_path / relative) == {"format": "pt"}
        mine, original_config = read_config(tmp_path, component), read_config(original, component)
        shared = (set(mine) & set(original_config)) - {"sample_size", "_diffusers_version"}
        assert {key: mine[key] for key in shared} == {key: original_config[key] for key in shared}
    scheduler = read_config(tmp_path, "scheduler")
    assert scheduler["_class_name"] == "DDIMScheduler"
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index == {**json.loads((original / "model_index.json").read_text()),
                     "scheduler": ["diffusers", "DDIMScheduler"],
                     "_diffusers_version": index["_diffusers_version"],
                     "requires_safety_checker": False}  # sdlib has no safety checker to save
    assert read_config(tmp_path, "unet")["sample_size"] == 32 // 2  # the tiny VAE's factor is 2


def test_a_saved_folder_loads_back_to_the_same_images(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    again = load(tmp_path)
    np.testing.assert_array_equal(image(again), image(tiny))
    prompts = ["a cat <|endoftext|> x", "A PHOTO, of; a dog!!"]
    np.testing.assert_array_equal(again.tokenizer(prompts), tiny.tokenizer(prompts))


def test_loras_are_saved_merged_and_embeddings_with_their_tokens(fixtures_dir, tmp_path):
    pipe = load(fixtures_dir / "tiny-sd")
    pipe.load_lora_weights(fixtures_dir / "lora_peft_a.safetensors", scale=0.7)
    pipe.load_textual_inversion(fixtures_dir / "ti_cat_toy.safetensors")
    pipe.load_textual_inversion(fixtures_dir / "ti_style.safetensors", token="<style>")
    prompt = "a <cat-toy> in <style> style"
    pipe.save_pretrained(tmp_path)
    again = load(tmp_path)
    assert again.tokenizer.added_tokens == pipe.tokenizer.added_tokens
    assert len(again.tokenizer) == again.text_encoder.config.vocab_size == len(pipe.tokenizer)
    np.testing.assert_array_equal(again.tokenizer([prompt]), pipe.tokenizer([prompt]))
    np.testing.assert_array_equal(image(again, prompt), image(pipe, prompt))
    pipe.unload_lora_weights()  # the folder keeps the merged weights; the pipeline goes back
    assert not np.array_equal(image(pipe, prompt), image(again, prompt))


def test_weights_in_another_dtype_and_bad_dtypes(tiny, tmp_path):
    tiny.save_pretrained(tmp_path, dtype="float16")
    assert {value.dtype for value in read_safetensors(tmp_path / WEIGHTS["unet"]).values()} == {
        np.dtype("float16")}
    again = load(tmp_path)
    np.testing.assert_allclose(image(again).astype(int), image(tiny).astype(int), atol=8)
    with pytest.raises(ValueError, match="dtype must be one of"):
        tiny.save_pretrained(tmp_path, dtype="int8")
