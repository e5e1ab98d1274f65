"""Bad checkpoints are caught with a message that names the problem; nothing is ever unpickled."""

import json
import pickle
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import sdlib
from sdlib import CheckpointError, loading
from sdlib.loading.safetensors import read_safetensors

UNET_FILE = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture()
def folder(tmp_path, fixtures_dir):
    target = tmp_path / "tiny-sd"
    shutil.copytree(fixtures_dir / "tiny-sd", target)
    return target


def load(path, **kwargs):
    return sdlib.StableDiffusion.from_pretrained(str(path), img_height=32, img_width=48,
                                                 jit_compile=False, **kwargs)


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load(tmp_path / "nowhere")


def test_not_a_path_at_all():
    with pytest.raises(TypeError, match="folder, a .safetensors file or a hub repo id"):
        sdlib.StableDiffusion.from_pretrained(12)


def test_folder_missing_a_component(folder):
    shutil.rmtree(folder / "vae")
    with pytest.raises(CheckpointError, match="vae/config.json is missing"):
        load(folder)


def test_folder_missing_weights(folder):
    for name in (folder / "unet").glob("*.safetensors"):
        name.unlink()
    with pytest.raises(CheckpointError, match="holds no diffusion_pytorch_model.safetensors"):
        load(folder)


def test_truncated_safetensors(folder):
    path = folder / UNET_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load(folder)


def test_corrupted_header(folder):
    path = folder / UNET_FILE
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted safetensors header"):
        load(folder)


def test_not_safetensors_at_all(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        read_safetensors(path)


def test_empty_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="only 0 bytes"):
        read_safetensors(path)


def _edit_unet(folder, edit):
    path = folder / UNET_FILE
    state = load_file(path)
    edit(state)
    save_file(state, path)


def test_missing_tensor_is_named(folder):
    _edit_unet(folder, lambda state: state.pop("conv_in.weight"))
    with pytest.raises(CheckpointError, match=r"1 missing tensor\(s\): conv_in.weight"):
        load(folder)


def test_unexpected_tensors_are_named_and_counted(folder):
    def add(state):
        for index in range(8):
            state[f"extra.layer{index}.weight"] = np.zeros(3, np.float32)

    _edit_unet(folder, add)
    with pytest.raises(CheckpointError,
                       match=r"8 unexpected tensor\(s\): extra.layer0.weight.* and 3 more"):
        load(folder)


def test_wrong_shape_is_named_with_both_shapes(folder):
    def reshape(state):
        state["conv_out.bias"] = np.zeros(5, np.float32)

    _edit_unet(folder, reshape)
    with pytest.raises(CheckpointError,
                       match=r"conv_out.bias \(checkpoint \(5,\), model expects \(4,\)\)"):
        load(folder)


def test_nan_weights_are_refused(folder):
    def poison(state):
        state["conv_out.bias"] = np.full(4, np.nan, np.float32)

    _edit_unet(folder, poison)
    with pytest.raises(CheckpointError, match="NaN or inf"):
        load(folder)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_float16_weights_are_refused(folder, value):
    def poison(state):
        for key in state:
            state[key] = state[key].astype(np.float16)
        state["conv_out.weight"][0, 0, 0, 0] = value

    _edit_unet(folder, poison)
    with pytest.raises(CheckpointError, match="conv_out.weight of the unet holds NaN or inf"):
        load(folder)


def test_float32_weights_that_overflow_float16_are_refused_in_float16(folder):
    def big(state):
        state["conv_out.bias"] = np.full(4, 1e5, np.float32)  # float16 stops at 65504

    _edit_unet(folder, big)
    load(folder)  # float32: fine
    with pytest.raises(CheckpointError, match="conv_out.bias of the unet holds NaN or inf as "
                                              "float16"):
        load(folder, dtype="float16")


def test_the_mapped_reader_reads_what_safetensors_reads(folder):
    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = {**load_file(path), "half": np.arange(6, dtype=np.float16).reshape(2, 3),
             "ids": np.arange(5, dtype=np.int64), "flag": np.array([True, False])}
    save_file(state, path)
    mapped = read_safetensors(path, mapped=True)
    assert mapped.keys() == state.keys()
    for key, value in state.items():
        assert mapped[key].dtype == value.dtype and np.array_equal(mapped[key], value), key
        assert not mapped[key].flags.writeable  # views of the file, never written


def test_config_that_does_not_match_the_weights(folder):
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["block_out_channels"] = [16, 32, 64]
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match the unet built from its config"):
        load(folder)


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt"])
def test_pickles_are_refused_without_being_opened(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"state_dict": {}}))
    with pytest.raises(CheckpointError,
                       match="pickled checkpoint.*never unpickles.*safetensors.torch.save_file"):
        load(path)


def test_pickle_renamed_to_safetensors_is_still_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"state_dict": {}}))
    with pytest.raises(CheckpointError, match="pickled checkpoint"):
        load(path)


def test_folder_with_only_pickled_weights_is_refused(folder):
    for name in (folder / "unet").glob("*.safetensors"):
        name.unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({}))
    with pytest.raises(CheckpointError, match="pickled checkpoint"):
        load(folder)


def test_sdxl_folder_is_named(folder):
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = "StableDiffusionXLPipeline"
    index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="SDXL"):
        load(folder)


@pytest.mark.parametrize("key, family", [
    ("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", "SDXL"),
    ("cond_stage_model.model.token_embedding.weight", "Stable Diffusion 2"),
    ("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "Stable Diffusion 3"),
    ("encoder.layers.0.weight", "not a Stable Diffusion checkpoint"),
])
def test_single_file_of_another_family_is_named(tmp_path, key, family):
    path = tmp_path / "other.safetensors"
    state = {key: np.zeros(2, np.float32)}
    if "joint_blocks" not in key and not key.startswith("encoder"):
        state["model.diffusion_model.input_blocks.0.0.weight"] = np.zeros(2, np.float32)
    save_file(state, path)
    with pytest.raises(CheckpointError, match=family):
        load(path)


def test_unet_config_of_sdxl_is_refused(folder):
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["addition_embed_type"] = "text_time"
    config["transformer_layers_per_block"] = [1, 2, 10]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="looks like SDXL"):
        load(folder)


def test_hub_id_offline_fails_with_a_clear_message(monkeypatch):
    """No network here: the download fails and says what to do instead."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises((OSError, ImportError), match="(Could not download|huggingface_hub)"):
        load("stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_loading_a_good_folder_still_works_after_all_that(folder):
    parts = loading.open_checkpoint(str(folder)).load()
    assert isinstance(parts, sdlib.Components)
    assert parts.unet.config.in_channels == 4 and parts.tokenizer.max_length == 77


def test_a_single_file_inpainting_checkpoint_is_read_as_nine_channels():
    """No config for a single file: SD v1.5's, with the input channels of the file's first conv."""
    from sdlib.loading.single_file import single_file_configs

    header = {"model.diffusion_model.input_blocks.0.0.weight": {"shape": [320, 9, 3, 3]}}
    assert single_file_configs(None, header)["unet"].in_channels == 9
    plain = {"model.diffusion_model.input_blocks.0.0.weight": {"shape": [320, 4, 3, 3]}}
    assert single_file_configs(None, plain)["unet"].in_channels == 4


def test_an_sdlib_file_may_hold_some_models_and_take_the_rest_from_its_base(tmp_path):
    from sdlib import presets
    from sdlib.loading.build import random_components
    from sdlib.loading.sdlib_file import save_sdlib_file

    configs = presets.tiny_configs()
    base, other = random_components(configs), random_components(configs)
    save_sdlib_file(base.models, configs, tmp_path / "base.safetensors", dtype="float32")
    delta = tmp_path / "delta.safetensors"
    save_sdlib_file({**base.models, "unet": other.unet}, configs, delta, dtype="float32",
                    components=("unet",), base=tmp_path / "base.safetensors")
    loaded = loading.open_checkpoint(str(delta)).load()
    for name, source in (("unet", other), ("vae", base), ("text_encoder", base)):
        for ours, theirs in zip(loaded.models[name].weights, source.models[name].weights,
                                strict=True):
            np.testing.assert_array_equal(np.asarray(ours.numpy()), np.asarray(theirs.numpy()))
    (tmp_path / "base.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="base.safetensors"):
        loading.open_checkpoint(str(delta)).load()
    with pytest.raises(ValueError, match="needs base="):
        save_sdlib_file(base.models, configs, tmp_path / "x.safetensors", components=("unet",))
