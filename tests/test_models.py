"""The three models' configs round-trip through Keras: get_config / from_config, serialization, and
a whole ``.keras`` file; the configs read dicts the way diffusers' config files need; seeded random
weights are the same however many threads draw them."""

import dataclasses

import keras
import numpy as np
import pytest

from sdlib import presets
from sdlib.loading.build import random_components
from sdlib.models.text_encoder import CLIPTextEncoder, TextEncoderConfig
from sdlib.models.unet import UNet, UNetConfig
from sdlib.models.vae import AutoencoderKL, VAEConfig


@pytest.fixture(scope="module")
def models():
    return random_components(presets.tiny_configs(), dtype="bfloat16").models


@pytest.mark.parametrize("name", ["text_encoder", "unet", "vae"])
def test_from_config_rebuilds_the_same_model(models, name):
    model = models[name]
    clone = type(model).from_config(model.get_config())
    assert type(clone) is type(model)
    assert clone.config == model.config and clone.name == model.name
    assert clone.dtype_policy.name == model.dtype_policy.name == "bfloat16"
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert again.config == model.config


@pytest.mark.parametrize("name", ["text_encoder", "unet", "vae"])
def test_a_keras_file_round_trips_weights_and_outputs(models, name, tmp_path):
    model = models[name]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.config == model.config
    assert len(loaded.weights) == len(model.weights)
    for ours, theirs in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours),
                                      keras.ops.convert_to_numpy(theirs), err_msg=ours.path)
    if name == "vae":
        image = np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 3)).astype("float32")
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(image)),
                                      keras.ops.convert_to_numpy(loaded(image)))


@pytest.mark.parametrize("config_class", [UNetConfig, VAEConfig, TextEncoderConfig])
def test_config_dicts_round_trip_as_json_would_store_them(config_class):
    config = {"unet": presets.mini_shapes_configs()["unet"], "vae": presets.tiny_configs()["vae"],
              "text": presets.tiny_configs()["text_encoder"]}
    original = next(value for value in config.values() if isinstance(value, config_class))
    as_json = {key: list(value) if isinstance(value, tuple) else value
               for key, value in original.to_dict().items()}
    assert config_class.from_dict({**as_json, "_diffusers_version": "0.42.1"}) == original


def test_a_model_is_built_from_its_config_class_not_a_dict():
    with pytest.raises(TypeError, match=r"takes a UNetConfig, got a dict.*UNetConfig.from_dict"):
        UNet(dataclasses.asdict(UNetConfig()))
    assert isinstance(CLIPTextEncoder.config_class(), TextEncoderConfig)
    assert AutoencoderKL.config_class is VAEConfig


def test_random_weights_are_seeded_the_same_on_one_thread_or_many(monkeypatch):
    from sdlib.loading import build

    configs = presets.tiny_configs()
    many = build.random_components(configs, with_weights=("unet",)).unet
    monkeypatch.setattr(build.os, "cpu_count", lambda: 1)  # the pool's size
    one = build.random_components(configs, with_weights=("unet",)).unet
    other = build.build_models(configs, with_weights=("unet",))["unet"]
    build.randomize(other, seed=7)
    for a, b, c in zip(many.weights, one.weights, other.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(c)), a.path
    kernel = next(w for w in many.weights if w.path.endswith("kernel") and w.ndim == 4)
    fan_in = int(np.prod(kernel.shape[:-1]))
    assert abs(np.std(np.asarray(kernel)) * np.sqrt(fan_in) - 1.0) < 0.1
