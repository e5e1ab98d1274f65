"""The chapters' image grids: the layout asked for, titles that wrap, mistakes named."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sdlib.book import image_grid  # noqa: E402


def images(count):
    return [np.full((8, 8, 3), 40 * index, np.uint8) for index in range(count)]


def test_one_row_by_default_and_a_grid_with_columns():
    _, axes = image_grid(images(3))
    assert axes.shape == (1, 3)
    figure, axes = image_grid(images(5), columns=2, row_labels=["a", "b", "c"])
    assert axes.shape == (3, 2)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b", "c"]
    assert not axes[2, 1].axison  # the sixth cell has no image
    plt.close(figure)


def test_long_titles_wrap_and_maps_take_the_colormap():
    title = "a small red circle in the top left corner on a black background"
    figure, axes = image_grid([np.zeros((4, 4)), images(1)[0], images(1)[0]],
                              [title, None, "XLA\nmean |diff| 0.1"], cmap="magma", vmin=-1, vmax=1)
    assert "\n" in axes[0, 0].get_title() and axes[0, 1].get_title() == ""
    assert axes[0, 2].get_title() == "XLA\nmean |diff| 0.1"  # its own line break is kept
    mapped = axes[0, 0].get_images()[0]
    assert mapped.get_cmap().name == "magma" and mapped.get_clim() == (-1, 1)
    plt.close(figure)


def test_column_titles_go_over_the_first_row():
    figure, axes = image_grid(images(4), columns=2, column_titles=["s = 1", "s = 7.5"])
    assert [ax.get_title() for ax in axes.flat] == ["s = 1", "s = 7.5", "", ""]
    plt.close(figure)


@pytest.mark.parametrize("kwargs, message",
                         [({"titles": ["one"]}, "1 titles for 2 images"),
                          ({"column_titles": ["a"]}, "1 column titles for 2 columns"),
                          ({"row_labels": ["a", "b"]}, "2 row labels for 1 rows")])
def test_mismatched_labels_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        image_grid(images(2), **kwargs)
