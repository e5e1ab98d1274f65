import itertools

import numpy as np
import pytest

from sdlib.mini import shapes
from sdlib.mini.shapes import ATTRIBUTES, ShapeSpec


def all_specs():
    return [ShapeSpec(*values) for values in itertools.product(*ATTRIBUTES.values())]


def test_attributes_are_ordered_and_labels_index_them():
    assert list(ATTRIBUTES) == ["shape", "color", "size", "position", "background"]
    spec = ShapeSpec("triangle", "purple", "large", "bottom left", "gray")
    assert spec.labels() == {"shape": 2, "color": 4, "size": 1, "position": 2, "background": 2}


def test_unknown_attribute_value_is_rejected():
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        ShapeSpec("hexagon", "red", "small", "center", "black")


def test_canonical_caption_wording():
    spec = ShapeSpec("circle", "red", "small", "top left", "black")
    assert shapes.canonical_caption(spec) == (
        "a small red circle in the top left on a black background"
    )


def test_every_canonical_caption_round_trips():
    specs = all_specs()
    assert len(specs) == 3 * 6 * 2 * 5 * 3
    for spec in specs:
        assert shapes.parse_caption(shapes.canonical_caption(spec)) == spec


@pytest.mark.parametrize(
    "caption, expected",
    [
        (
            "a big orange square in the upper left on a grey background",
            ShapeSpec("square", "orange", "large", "top left", "gray"),
        ),
        (
            "On a white background, a tiny blue triangle at the lower right",
            ShapeSpec("triangle", "blue", "small", "bottom right", "white"),
        ),
        (
            "a little yellow circle in the centre against a black background",
            ShapeSpec("circle", "yellow", "small", "center", "black"),
        ),
        (
            "a large purple circle in the middle on gray",
            ShapeSpec("circle", "purple", "large", "center", "gray"),
        ),
    ],
)
def test_synonym_captions_parse(caption, expected):
    assert shapes.parse_caption(caption) == expected


def test_varied_captions_name_only_true_attributes_and_never_none():
    rng = np.random.default_rng(3)
    specs = shapes.sample_specs(2000, rng, include_held_out=True)
    captions = [shapes.varied_caption(spec, rng) for spec in specs]
    dropped = 0
    for spec, caption in zip(specs, captions, strict=True):
        named = shapes.parse_attributes(caption)
        assert named, caption
        assert all(getattr(spec, attr) == value for attr, value in named.items()), caption
        dropped += len(named) < len(ATTRIBUTES)
    assert 0.3 < dropped / len(specs) < 0.8  # some, not all, captions leave something out
    assert len(set(captions)) > 1000
    assert any(c.startswith(("on ", "against ")) for c in captions)  # reordered clauses
    assert any("grey" in c for c in captions) and any("upper" in c for c in captions)


@pytest.mark.parametrize(
    "caption, message",
    [
        ("a small pink circle in the top left on a black background", r"no color.*pink"),
        ("a small red circle in the top left", "no background"),
        ("a red circle at the top on a black background", r"no size.*no position.*top"),
        ("a small red blue circle in the center on a black background", "more than one color"),
        ("", "no shape"),
    ],
)
def test_bad_captions_raise_helpful_errors(caption, message):
    with pytest.raises(ValueError, match=message):
        shapes.parse_caption(caption)


def test_held_out_pairs_are_excluded_unless_asked_for():
    rng = np.random.default_rng(0)
    assert not any(shapes.is_held_out(s) for s in shapes.sample_specs(5000, rng))
    assert any(shapes.is_held_out(s) for s in shapes.sample_specs(500, rng, include_held_out=True))
    _, captions, _ = shapes.make_dataset(400, seed=1, varied=False)
    assert not any(shapes.is_held_out(shapes.parse_caption(c)) for c in captions)
    # every color and every shape still appears in training data
    seen = shapes.sample_specs(3000, rng)
    assert {s.color for s in seen} == set(ATTRIBUTES["color"])
    assert {s.shape for s in seen} == set(ATTRIBUTES["shape"])


def test_canonical_prompts_respect_held_out_flag():
    held = [shapes.parse_caption(p) for p in shapes.canonical_prompts(200, seed=0, held_out=True)]
    seen = [shapes.parse_caption(p) for p in shapes.canonical_prompts(200, seed=0, held_out=False)]
    mixed = [shapes.parse_caption(p) for p in shapes.canonical_prompts(400, seed=0)]
    assert all(shapes.is_held_out(s) for s in held)
    assert {(s.color, s.shape) for s in held} == set(shapes.HELD_OUT)
    assert not any(shapes.is_held_out(s) for s in seen)
    assert 0 < sum(shapes.is_held_out(s) for s in mixed) < len(mixed)
    assert shapes.canonical_prompts(50, seed=4) == shapes.canonical_prompts(50, seed=4)


def test_render_without_rng_is_deterministic_and_jitter_changes_it():
    spec = ShapeSpec("triangle", "green", "large", "center", "white")
    image = shapes.render(spec)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, shapes.render(spec))
    assert not np.array_equal(image, shapes.render(spec, np.random.default_rng(0)))


def test_objects_stay_inside_the_frame():
    rng = np.random.default_rng(0)
    for position in ATTRIBUTES["position"]:
        for shape in ATTRIBUTES["shape"]:
            for _ in range(5):
                image = shapes.render(ShapeSpec(shape, "red", "large", position, "black"), rng)
                border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
                assert (border == image[0, 0]).all(), (shape, position)


def test_sizes_and_colors_are_clearly_distinct():
    def area(size):
        image = shapes.render(ShapeSpec("square", "red", size, "center", "black"))
        return (image[..., 0] > 0).sum()

    assert area("large") > 3 * area("small")
    colors = {name: np.array(rgb, float) for name, rgb in shapes.COLOR_RGB.items()}
    backgrounds = {name: np.array(rgb, float) for name, rgb in shapes.BACKGROUND_RGB.items()}
    for a, b in itertools.combinations(colors.values(), 2):
        assert np.abs(a - b).max() >= 75
    for color in colors.values():
        for background in backgrounds.values():
            assert np.abs(color - background).max() > 60


def test_make_dataset_shapes_dtypes_and_labels():
    images, captions, labels = shapes.make_dataset(64, seed=5)
    assert images.shape == (64, 64, 64, 3) and images.dtype == np.uint8
    assert len(captions) == 64 and all(isinstance(c, str) for c in captions)
    assert list(labels) == list(ATTRIBUTES)
    for attr, values in ATTRIBUTES.items():
        assert labels[attr].shape == (64,)
        assert np.issubdtype(labels[attr].dtype, np.integer)
        assert labels[attr].min() >= 0 and labels[attr].max() < len(values)
    again, again_captions, _ = shapes.make_dataset(64, seed=5)
    np.testing.assert_array_equal(images, again)
    assert captions == again_captions


def test_canonical_dataset_captions_match_labels():
    _, captions, labels = shapes.make_dataset(100, seed=2, varied=False)
    for i, caption in enumerate(captions):
        spec = shapes.parse_caption(caption)
        assert spec.labels() == {attr: int(labels[attr][i]) for attr in ATTRIBUTES}
