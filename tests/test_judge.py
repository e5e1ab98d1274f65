import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from sdlib.mini import judge as judge_lib
from sdlib.mini import shapes
from sdlib.mini.judge import ShapesJudge, adherence


@pytest.fixture(scope="module")
def judge():
    return ShapesJudge.from_pretrained()


@pytest.fixture(scope="module")
def fresh():
    """300 jittered renders from a seed the judge never trained on, canonical captions."""
    return shapes.make_dataset(300, seed=777, include_held_out=True, varied=False)


def test_shipped_weights_are_small():
    assert judge_lib.DEFAULT_WEIGHTS.stat().st_size < 1_000_000


def test_reads_every_attribute_of_fresh_renders(judge, fresh):
    images, _, labels = fresh
    predicted = judge.predict(images)
    for attr in shapes.ATTRIBUTES:
        assert predicted[attr].shape == (300,)
        accuracy = (predicted[attr] == labels[attr]).mean()
        assert accuracy >= 0.99, (attr, accuracy)


def test_adherence_is_perfect_on_matching_prompts_and_drops_when_shuffled(judge, fresh):
    images, prompts, _ = fresh
    scores = adherence(judge, images[:100], prompts[:100])
    assert set(scores) == {*shapes.ATTRIBUTES, "all3", "all"}
    assert all(value == 1.0 for value in scores.values()), scores
    shuffled = adherence(judge, images[:100], np.roll(prompts[:100], 1).tolist())
    assert shuffled["all"] < 0.2 and shuffled["all3"] < 0.2
    assert all(shuffled[attr] < 0.8 for attr in shapes.ATTRIBUTES), shuffled


def test_adherence_checks_lengths(judge, fresh):
    images, prompts, _ = fresh
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        adherence(judge, images[:2], prompts[:3])


def test_predict_names_and_other_image_sizes(judge):
    spec = shapes.ShapeSpec("triangle", "orange", "large", "bottom right", "white")
    image = shapes.render(spec)  # (64, 64, 3)
    assert judge.predict_names(image[None]) == [spec]
    doubled = image.repeat(2, axis=0).repeat(2, axis=1)  # (128, 128, 3)
    assert judge.predict_names(doubled[None]) == [spec]


def test_saved_and_loaded_judges_agree(judge, fresh, tmp_path):
    images = fresh[0][:64]
    path = tmp_path / "judge.safetensors"
    judge.save(path)
    loaded = ShapesJudge.from_pretrained(path)
    before, after = judge.predict_proba(images), loaded.predict_proba(images)
    for attr in shapes.ATTRIBUTES:
        np.testing.assert_allclose(before[attr], after[attr], atol=1e-6)


def test_loading_rejects_foreign_checkpoints(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"kernel": np.zeros(3, np.float32)}, str(path), metadata={"format": "other"})
    with pytest.raises(ValueError, match="not a ShapesJudge checkpoint"):
        ShapesJudge.from_pretrained(path)
    metadata = {
        "format": judge_lib.WEIGHTS_FORMAT,
        "config": json.dumps({"widths": [16, 32, 64], "position_channels": 8, "hidden_dim": 128}),
        "attributes": json.dumps(shapes.ATTRIBUTES),
    }
    save_file({"kernel": np.zeros(3, np.float32)}, str(path), metadata=metadata)
    with pytest.raises(ValueError, match="missing"):
        ShapesJudge.from_pretrained(path)


def test_degrade_keeps_shape_and_dtype():
    images = shapes.make_dataset(8, seed=0)[0]
    rng = np.random.default_rng(0)
    for degraded in (judge_lib.degrade(images, rng), judge_lib.degrade(images, rng, hard=True)):
        assert degraded.shape == images.shape and degraded.dtype == np.uint8
    assert not np.array_equal(judge_lib.degrade(images, rng, hard=True), images)
