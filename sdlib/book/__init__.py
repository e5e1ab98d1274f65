"""What the chapters and the benchmark scripts use: the chapter setup (``setup``), image grids
(``viz``), the archived benchmark results and their tables (``archive``) and the timing harness
(``bench``). Nothing below imports it.

    from sdlib.book import chapter_setup, show_images
"""

from sdlib.book.setup import chapter_setup
from sdlib.book.viz import image_grid, show_images

__all__ = ["chapter_setup", "image_grid", "show_images"]
