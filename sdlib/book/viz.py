"""Image grids for the chapters: images, latents and attention maps side by side, titled.

    show_images(images, ["seed 0", "seed 1"], suptitle=prompt)             # one row, a title each
    show_images(pictures, columns=4, column_titles=scales, row_labels=prompts)  # rows x columns

uint8 RGB images (H, W, 3) are drawn as they are; 2-D arrays (a latent channel, an attention map)
with ``cmap`` and the ``vmin`` / ``vmax`` given. Long titles wrap to the width of their panel; a
"\\n" in a title or label starts a new line.
"""

import textwrap

import matplotlib.pyplot as plt
import numpy as np


def image_grid(images, titles=None, columns=None, column_titles=None, row_labels=None,
               suptitle=None, size=2.4, fontsize=8, cmap=None, vmin=None, vmax=None):
    """Draw ``images`` in a grid of ``columns`` (default: one row); returns (figure, axes (rows,
    columns)). ``titles``: one per image (None or "" for none); ``column_titles``: one per column,
    over the first row; ``row_labels``: one per row, left of it."""
    images = list(images)
    columns = columns or len(images)
    rows = -(-len(images) // columns)
    titles = list(titles) if titles is not None else [None] * len(images)
    for name, given, wanted, per in (("titles", titles, len(images), "image"),
                                     ("column titles", column_titles, columns, "column"),
                                     ("row labels", row_labels, rows, "row")):
        if given is not None and len(given) != wanted:
            raise ValueError(f"{len(given)} {name} for {wanted} {per}s: give one per {per}.")
    if column_titles is not None:
        titles = [column_titles[index] if index < columns and not titles[index] else titles[index]
                  for index in range(len(images))]
    title_lines = max((len(_wrap(title, size)) for title in titles if title), default=0)
    width = size * columns + (1.2 if row_labels else 0)
    height = rows * (size + 0.18 * title_lines) + (0.4 if suptitle else 0)
    figure, axes = plt.subplots(rows, columns, squeeze=False, figsize=(width, height))
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
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
    for row, label in enumerate(row_labels or []):
        axes[row, 0].set_ylabel("\n".join(_wrap(label, 2.4)), fontsize=fontsize)
    if suptitle:
        figure.suptitle(suptitle, fontsize=fontsize + 1)
    figure.tight_layout()
    return figure, axes


def show_images(images, titles=None, **kwargs):
    """``image_grid`` (same arguments), shown now."""
    image_grid(images, titles, **kwargs)
    plt.show()


def _wrap(text, size):
    """Lines of ``text`` at most ~9 characters per inch of panel; its own line breaks kept."""
    width = max(12, int(size * 9))
    return [line for part in str(text).split("\n") for line in textwrap.wrap(part, width) or [""]]
