"""Judged editing tasks on the shapes: recolor an object (image-to-image) and replace it by another
(inpainting), with the masks that say where, and the scores the judge gives the results.

A task starts from a rendered image of a source spec and asks for a target spec: the same object in
another color ("recolor"); a new object painted into an empty region, the old one kept ("add": the
mask is the new object's place); or a new object elsewhere with the old one erased ("replace": the
mask covers both places). The judge reads the target's attributes off the edited image, as it reads
text-to-image results (``sdlib.mini.judge``); for "add" it reads the masked region alone (the rest
painted over with the background), since the picture then holds two objects. The part of the
picture the mask keeps should not change: its mean |difference| of 255 is reported.
"""

import dataclasses

import numpy as np
from PIL import Image

from sdlib.mini import shapes
from sdlib.mini.judge import adherence

MARGIN_PX = 5  # past the object's nominal box: covers render's jitter (3 px, +15% size)


@dataclasses.dataclass(frozen=True)
class EditTask:
    source: shapes.ShapeSpec
    target: shapes.ShapeSpec

    @property
    def prompt(self):
        return shapes.canonical_caption(self.target)


def object_box(spec, margin=MARGIN_PX):
    """(left, top, right, bottom) pixels around where ``shapes.render`` draws the object."""
    cx, cy = shapes.POSITION_CENTER[spec.position]
    half = shapes.SIZE_PX[spec.size] * (1 + shapes.SIZE_JITTER) / 2 + margin
    low, high = 0, shapes.IMAGE_SIZE
    return (max(low, int(cx - half)), max(low, int(cy - half)), min(high, int(np.ceil(cx + half))),
            min(high, int(np.ceil(cy + half))))


def box_mask(boxes, size=shapes.IMAGE_SIZE):
    """uint8 (size, size): 255 inside any of the boxes (repaint), 0 elsewhere (keep)."""
    mask = np.zeros((size, size), np.uint8)
    for left, top, right, bottom in boxes:
        mask[top:bottom, left:right] = 255
    return mask


def _other(values, current, rng):
    return str(rng.choice([value for value in values if value != current]))


def recolor_tasks(n, seed, held_out=False):
    """The same object, another color. ``held_out`` as in ``shapes.canonical_prompts``: False
    keeps source and target to seen (color, shape) pairs, True makes every target held out."""
    rng = np.random.default_rng(seed)
    tasks = []
    while len(tasks) < n:
        source = shapes.sample_specs(1, rng, include_held_out=False)[0]
        target = dataclasses.replace(source, color=_other(shapes.ATTRIBUTES["color"],
                                                          source.color, rng))
        if shapes.is_held_out(target) == bool(held_out):
            tasks.append(EditTask(source, target))
    return tasks


def replace_tasks(n, seed, held_out=False):
    """Erase the object and paint a new one (any shape, color, size) at another position, on the
    same background."""
    rng = np.random.default_rng(seed)
    tasks = []
    while len(tasks) < n:
        source = shapes.sample_specs(1, rng, include_held_out=False)[0]
        drawn = shapes.sample_specs(1, rng, include_held_out=True)[0]
        target = dataclasses.replace(drawn, background=source.background,
                                     position=_other(shapes.ATTRIBUTES["position"],
                                                     source.position, rng))
        if shapes.is_held_out(target) == bool(held_out):
            tasks.append(EditTask(source, target))
    return tasks


def _resized(array, size):
    """A 64-pixel picture or mask at ``size`` pixels (nearest: the shapes' edges stay sharp)."""
    if size == shapes.IMAGE_SIZE:
        return array
    return np.asarray(Image.fromarray(array).resize((size, size), Image.NEAREST))


def overlap(first, second):
    """Whether two (left, top, right, bottom) boxes share a pixel."""
    return not (first[2] <= second[0] or second[2] <= first[0] or first[3] <= second[1]
                or second[3] <= first[1])


def add_tasks(n, seed, held_out=False):
    """Paint a new object (any shape, color, size) into an empty region of the same background;
    its box and the old object's do not overlap."""
    rng = np.random.default_rng(seed)
    tasks = []
    while len(tasks) < n:
        task = replace_tasks(1, int(rng.integers(2**31)), held_out)[0]
        if not overlap(object_box(task.source), object_box(task.target)):
            tasks.append(task)
    return tasks


def add_mask(task, size=shapes.IMAGE_SIZE):
    return _resized(box_mask([object_box(task.target)]), size)


def replace_mask(task, size=shapes.IMAGE_SIZE):
    return _resized(box_mask([object_box(task.source), object_box(task.target)]), size)


def source_images(tasks, seed, size=shapes.IMAGE_SIZE):
    """Each task's source rendered (jittered, seeded), (N, size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    return np.stack([_resized(shapes.render(task.source, rng), size) for task in tasks])


def measure_recolor(pipe, judge, tasks, strength=0.6, seed=0, batch_size=20, **kwargs):
    """Image-to-image toward each task's recolored prompt; scores: the new color, the position and
    shape kept, and all three. Returns ``(scores, sources, results)``."""
    sources = source_images(tasks, seed, pipe.img_height)
    results = np.concatenate([
        pipe.image_to_image([task.prompt for task in tasks[start:start + batch_size]],
                            sources[start:start + batch_size], strength=strength,
                            seed=seed + index, verbose=False, **kwargs)
        for index, start in enumerate(range(0, len(tasks), batch_size))])
    scores = adherence(judge, results, [task.prompt for task in tasks])
    scores = {"new color": scores["color"], "position kept": scores["position"],
              "shape kept": scores["shape"], "all3": scores["all3"]}
    scores["changed"] = float(np.abs(results.astype(int) - sources).mean())
    return scores, sources, results


def measure_replace(pipe, judge, tasks, seed=0, batch_size=20, kind="replace", **kwargs):
    """Inpainting of each task's mask (``kind`` "replace" or "add") toward its target prompt; the
    judge's scores of the target's attributes, and ``unmasked |delta|``: the mean |difference| of
    255 where the mask keeps. Returns ``(scores, sources, results, masks)``."""
    sources = source_images(tasks, seed, pipe.img_height)
    make_mask = {"replace": replace_mask, "add": add_mask}[kind]
    masks = np.stack([make_mask(task, pipe.img_height) for task in tasks])  # (N, H, W)
    results = np.concatenate([
        pipe.inpaint([task.prompt for task in tasks[start:start + batch_size]],
                     sources[start:start + batch_size], masks[start:start + batch_size],
                     seed=seed + index, verbose=False, **kwargs)
        for index, start in enumerate(range(0, len(tasks), batch_size))])
    judged = results
    if kind == "add":  # the masked region alone: the old object painted over with background
        backgrounds = np.array([shapes.BACKGROUND_RGB[task.target.background] for task in tasks])
        judged = np.where(masks[..., None] > 0, results,
                          backgrounds[:, None, None, :].astype(np.uint8))
    scores = adherence(judge, judged, [task.prompt for task in tasks])
    kept = masks == 0  # (N, H, W)
    difference = np.abs(results.astype(int) - sources).mean(axis=-1)  # (N, H, W)
    scores["unmasked |delta|"] = float(difference[kept].mean())
    return scores, sources, results, masks
