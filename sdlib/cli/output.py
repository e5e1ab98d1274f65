"""Where the commands' images go: ``--out`` checked before any work (format from the extension, a
folder that exists and takes files, nothing overwritten unless asked), then written atomically."""

import os
import tempfile

from PIL import Image

# Extension -> Pillow format and its options. JPEG and WebP are lossy: quality 95 keeps them close.
FORMATS = {
    ".png": ("PNG", {}),
    ".jpg": ("JPEG", {"quality": 95}),
    ".jpeg": ("JPEG", {"quality": 95}),
    ".webp": ("WEBP", {"quality": 95}),
}


def image_format(path):
    """The Pillow format (and its options) that ``path``'s extension names; refuses others."""
    extension = os.path.splitext(str(path))[1].lower()
    if extension not in FORMATS:
        found = f"ends in {extension!r}" if extension else "has no extension"
        raise ValueError(f"--out {path} {found}; end it in one of {', '.join(FORMATS)} (the "
                         "extension chooses the format).")
    return FORMATS[extension]


def output_paths(out, count):
    """One file for one image; name-0.ext, name-1.ext, ... for a batch."""
    if count == 1:
        return [str(out)]
    stem, extension = os.path.splitext(str(out))
    return [f"{stem}-{index}{extension}" for index in range(count)]


def planned_paths(out, count, overwrite):
    """The files ``--out`` names, checked before minutes of work: a known extension, a folder
    that exists and takes files, no directory in the way, no existing file unless ``overwrite``."""
    if os.path.isdir(out):
        raise IsADirectoryError(f"--out {out} is a folder; give a file name in it, such as "
                                f"{os.path.join(out, 'image.png')}.")
    image_format(out)
    check_folder(os.path.dirname(os.path.abspath(out)))
    paths = output_paths(out, count)
    for path in paths:
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a folder, so an image cannot be saved there; "
                                    "choose another --out.")
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it, or "
                                  "choose another --out.")
    return paths


def check_folder(folder):
    """Refuse a folder that is missing, is a file, or does not take new files."""
    if not os.path.exists(folder):
        raise FileNotFoundError(f"No folder {folder} for --out; create it first (mkdir -p "
                                f"{folder}) or choose another --out.")
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder} is a file, not a folder; choose another --out.")
    try:
        with tempfile.TemporaryFile(dir=folder):  # what saving will do: create a file there
            pass
    except OSError as error:
        raise PermissionError(f"Cannot write into {folder} ({error.strerror or error}); choose "
                              "another --out.") from None


def save_image(image, path, overwrite=False):
    """Write a uint8 (H, W, 3) image in the format its extension names, atomically; never
    replace an existing file unless asked."""
    format_name, options = image_format(path)
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it, or choose "
                              "another --out.")
    folder = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".sdlib-",
                                         suffix=os.path.splitext(path)[1])
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; a saved image gets normal permissions
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(image).save(stream, format=format_name, **options)
        if not overwrite and os.path.exists(path):  # appeared while we were writing
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it.")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def save_all(images, paths, overwrite):
    for image, path in zip(images, paths, strict=True):
        print(f"saved {save_image(image, path, overwrite=overwrite)}")
