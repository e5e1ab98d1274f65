"""``python -m sdlib img2img IMAGE "prompt"`` and ``python -m sdlib inpaint IMAGE MASK "prompt"``:
redraw a picture, or repaint where the mask is white, saved as PNG."""

from PIL import Image

from sdlib.cli import common


def add_parser(commands):
    img2img = commands.add_parser("img2img", help="redraw an image toward a prompt (SDEdit)")
    img2img.add_argument("image", help="the picture to start from (PNG, JPEG, ...)")
    img2img.add_argument("prompt")
    img2img.add_argument("--strength", type=float, default=0.8,
                         help="how much of the schedule runs: 0.3 keeps most of the image, 1.0 "
                         "keeps little (default 0.8)")
    common.add_sampling_arguments(img2img)
    common.add_model_arguments(img2img)
    img2img.set_defaults(run=run_img2img)

    inpaint = commands.add_parser("inpaint", help="repaint where the mask is white")
    inpaint.add_argument("image", help="the picture to edit")
    inpaint.add_argument("mask", help="a grayscale image of the same size: white = repaint")
    inpaint.add_argument("prompt")
    inpaint.add_argument("--strength", type=float, default=1.0,
                         help="1.0 (default) repaints from noise; lower keeps more of the old "
                         "content under the mask")
    inpaint.add_argument("--paste-original", action="store_true",
                         help="copy the unmasked pixels back exactly")
    common.add_sampling_arguments(inpaint)
    common.add_model_arguments(inpaint)
    inpaint.set_defaults(run=run_inpaint)


def open_image(path, mode):
    try:
        with Image.open(path) as picture:
            return picture.convert(mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"No image at {path}.") from None
    except OSError as error:
        raise ValueError(f"{path} is not an image PIL can read ({error}).") from None


def run_img2img(args):
    paths = common.planned_paths(args)
    image = open_image(args.image, "RGB")
    pipe = common.load_pipeline(args, image.height, image.width)
    images = pipe.image_to_image(args.prompt, image, strength=args.strength,
                                 **common.sampling_kwargs(args))
    common.save_all(images, paths, args.overwrite)


def run_inpaint(args):
    paths = common.planned_paths(args)
    image, mask = open_image(args.image, "RGB"), open_image(args.mask, "L")
    pipe = common.load_pipeline(args, image.height, image.width)
    images = pipe.inpaint(args.prompt, image, mask, strength=args.strength,
                          paste_original=args.paste_original, **common.sampling_kwargs(args))
    common.save_all(images, paths, args.overwrite)
