"""The judged editing tasks of the miniature world: what each task asks for, and masks that cover
what they must (the old object, whatever render's jitter did to it)."""

import dataclasses

import numpy as np
import pytest

from sdlib.mini import edits, shapes
from sdlib.mini.train import inpainting_examples


def object_pixels(image, spec):
    background = np.array(shapes.BACKGROUND_RGB[spec.background])
    return np.abs(image.astype(int) - background).max(axis=-1) > 40


@pytest.mark.parametrize("held_out", [False, True])
def test_recolor_tasks_change_the_color_only(held_out):
    for task in edits.recolor_tasks(50, seed=0, held_out=held_out):
        assert task.target.color != task.source.color
        assert dataclasses.replace(task.target, color=task.source.color) == task.source
        assert shapes.is_held_out(task.target) == held_out and not shapes.is_held_out(task.source)
        assert task.prompt == shapes.canonical_caption(task.target)


def test_replace_tasks_move_to_another_place_on_the_same_background():
    tasks = edits.replace_tasks(100, seed=0)
    for task in tasks:
        assert task.target.position != task.source.position
        assert task.target.background == task.source.background
    assert len({task.target.shape for task in tasks}) == 3  # any shape, color, size


def test_the_replace_mask_covers_the_old_object_and_the_new_place():
    tasks = edits.replace_tasks(200, seed=1)
    sources = edits.source_images(tasks, seed=1)
    rng = np.random.default_rng(2)
    for task, source in zip(tasks, sources, strict=True):
        mask = edits.replace_mask(task) > 0
        assert mask[object_pixels(source, task.source)].all()  # jitter included
        target = shapes.render(task.target, rng)
        assert mask[object_pixels(target, task.target)].all()
        assert 0 < mask.mean() < 1


def test_sources_and_masks_scale_to_the_pipeline_size():
    task = edits.replace_tasks(1, seed=3)[0]
    assert edits.source_images([task], seed=0, size=128).shape == (1, 128, 128, 3)
    small, large = edits.replace_mask(task), edits.replace_mask(task, size=128)
    np.testing.assert_array_equal(large[::2, ::2], small)


def test_training_examples_mix_whole_images_objects_added_and_random_boxes():
    images, captions, masks = inpainting_examples(400, np.random.default_rng(0))
    assert images.shape == (400, 64, 64, 3) and masks.shape == (400, 64, 64)
    full = (masks == 255).all(axis=(1, 2))
    assert 0.05 < full.mean() < 0.16  # some: the model stays a text-to-image model
    assert (masks > 0).any(axis=(1, 2)).all()  # every mask repaints something
    # "add" examples: an object the caption does not name, outside the mask, to be kept
    edges = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
    background = np.median(edges, axis=1)[:, None, None, :]  # (N, 1, 1, 3)
    objects = np.abs(images.astype(int) - background).max(axis=-1) > 40  # (N, 64, 64)
    kept_object = (objects & (masks == 0)).any(axis=(1, 2))
    assert 0.2 < kept_object.mean() < 0.45
