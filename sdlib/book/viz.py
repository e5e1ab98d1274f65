"""Image grids for the chapters: images, latents and attention maps side by side, titled.

    show_images(images, titles=["seed 0", "seed 1"], suptitle=prompt)
    show_images(pictures, titles=column_titles, columns=4, row_labels=prompts)  # rows x columns

uint8 RGB images (H, W, 3) are drawn as they are; 2-D arrays (a latent channel, an attention map)
with ``cmap`` and the ``vmin`` / ``vmax`` given. Long titles wrap to the width of their panel.
"""

import textwrap

import matplotlib.pyplot as plt
import numpy as np


def image_grid(images, titles=None, columns=None, row_labels=None, suptitle=None, size=2.4,
               fontsize=8, cmap=None, vmin=None, vmax=None):
    """Draw ``images`` in a grid of ``columns`` (default: one row); returns (figure, axes (rows,
    columns)). ``titles``: one per image (None or "" for none); ``row_labels``: one per row."""
    images = list(images)
    columns = columns or len(images)
    rows = -(-len(images) // columns)
    titles = list(titles) if titles is not None else [None] * len(images)
    if len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images: give one per image.")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows: give one per row.")
    title_lines = max((len(_wrap(title, size)) for title in titles if title), default=0)
    width = size * columns + (1.2 if row_labels else 0)
    height = rows * (size + 0.18 * title_lines) + (0.4 if suptitle else 0)
    figure, axes = plt.subplots(rows, columns, squeeze=False, figsize=(width, height))
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= len(images):
            ax.axis("off")
            continue
        image = np.asarray(images[index])
        if image.ndim == 2:
            ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
        else:
            ax.imshow(image)
        if titles[index]:
            ax.set_title("\n".join(_wrap(titles[index], size)), fontsize=fontsize)
        if row_labels is None:
            for spine in ax.spines.values():
                spine.set_visible(False)
    for row, label in enumerate(row_labels or []):
        axes[row, 0].set_ylabel("\n".join(textwrap.wrap(str(label), 22)), fontsize=fontsize)
    if suptitle:
        figure.suptitle(suptitle, fontsize=fontsize + 1)
    figure.tight_layout()
    return figure, axes


def show_images(images, **kwargs):
    """``image_grid`` (same arguments), shown now."""
    image_grid(images, **kwargs)
    plt.show()


def _wrap(title, size):
    return textwrap.wrap(str(title), max(12, int(size * 9)))
