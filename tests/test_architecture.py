"""The real SD v1.5 architecture: parameter counts and the checkpoint names and shapes it
expects."""

import numpy as np
import pytest

from sdlib import presets
from sdlib.loading import single_file
from sdlib.loading.build import build_models
from sdlib.loading.state_dict import keras_weight_map, strip_text_model_prefix, to_keras_layout

pytestmark = pytest.mark.slow  # builds the 1.07 B-parameter model (~40 s on 2 cores)

PREFIXES = {"unet": single_file.UNET_PREFIX, "vae": single_file.VAE_PREFIX,
            "text_encoder": single_file.TEXT_PREFIX}


@pytest.fixture(scope="module")
def sd15_models():
    return build_models(presets.sd15_configs())


def _count(model):
    return sum(int(np.prod(variable.shape)) for variable in model.weights)


def test_parameter_counts_match_sd15(sd15_models):
    assert _count(sd15_models["text_encoder"]) == 123_060_480
    assert _count(sd15_models["unet"]) == 859_520_964
    assert _count(sd15_models["vae"]) == 83_653_863


def test_every_sd15_single_file_tensor_maps_onto_a_model_weight_of_its_shape(
        sd15_models, fixtures_dir):
    """All 1,130 tensors of v1-5-pruned-emaonly.safetensors (key, diffusers name, shape)."""
    rows = [line.split("\t")
            for line in (fixtures_dir / "sd15_keymap.tsv").read_text().splitlines()]
    assert len(rows) == 1130
    configs = presets.sd15_configs()
    shapes = {key: tuple(int(d) for d in shape.strip("[]").split(", ")) for key, _, shape in rows}
    fake_state = {key: np.zeros(shape, dtype=np.float16) for key, shape in shapes.items()}
    parts, unknown = single_file.split_components(fake_state, configs["unet"], configs["vae"])
    assert unknown == []
    parts["text_encoder"] = strip_text_model_prefix(parts["text_encoder"])

    diffusers_names = {key: name.removeprefix("text_model.") for key, name, _ in rows}
    for component, prefix in PREFIXES.items():
        mapping = keras_weight_map(sd15_models[component])
        assert set(parts[component]) == set(mapping), component
        for key, name in diffusers_names.items():
            if key.startswith(prefix):
                assert name in parts[component], f"{key} should become {name}"
                variable, layout = mapping[name]
                keras_shape = to_keras_layout(fake_state[key], layout).shape
                assert keras_shape == tuple(variable.shape), key


def test_the_inpainting_unet_matches_sd15_inpainting():
    models = build_models(presets.sd15_inpainting_configs(), with_weights=["unet"])
    assert _count(models["unet"]) == 859_535_364  # 859,520,964 + 5 x 320 x 3 x 3 conv_in weights
