"""What the chapters and the benchmark scripts use: the chapter setup (``setup``), image grids
(``viz``), the archived benchmark results and their tables (``archive``) and the timing harness
(``bench``), and tables and text made to fit the page (``display``). Nothing below imports it.

    from sdlib.book import chapter_setup, print_wrapped, show_images, show_table
"""

from sdlib.book.display import print_wrapped, show_table
from sdlib.book.setup import chapter_setup
from sdlib.book.viz import image_grid, show_images

__all__ = ["chapter_setup", "image_grid", "print_wrapped", "show_images", "show_table"]
