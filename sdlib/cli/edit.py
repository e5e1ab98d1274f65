"""``python -m sdlib img2img IMAGE "prompt"`` and ``python -m sdlib inpaint IMAGE MASK "prompt"``:
redraw a picture, or repaint where the mask is white, saved as PNG, JPEG or WebP."""

import time

from PIL import Image

from sdlib.cli import common, output, quiet


def add_parser(commands):
    img2img = commands.add_parser("img2img", help="redraw an image toward a prompt (SDEdit)",
                                  description="Image to image (SDEdit): noise the picture part of "
                                  "the way, then denoise it toward the prompt.",
                                  formatter_class=common.HelpWithDefaults)
    img2img.add_argument("image", help="the picture to start from (PNG, JPEG, ...); the output "
                         "has its size")
    img2img.add_argument("prompt", help="what the picture should become")
    img2img.add_argument("--strength", type=float, default=0.8,
                         help="how much of the schedule runs: 0.3 keeps most of the image, 1.0 "
                         "keeps little")
    common.add_sampling_arguments(img2img)
    common.add_model_arguments(img2img)
    img2img.set_defaults(run=run_img2img)

    inpaint = commands.add_parser("inpaint", help="repaint where the mask is white",
                                  description="Inpainting: repaint the picture where the mask is "
                                  "white, keep it where the mask is black.",
                                  formatter_class=common.HelpWithDefaults)
    inpaint.add_argument("image", help="the picture to edit; the output has its size")
    inpaint.add_argument("mask", help="a grayscale image of the same size: white = repaint")
    inpaint.add_argument("prompt", help="what to paint where the mask is white")
    inpaint.add_argument("--strength", type=float, default=1.0,
                         help="1.0 repaints from noise; lower keeps more of the old content under "
                         "the mask")
    inpaint.add_argument("--paste-original", action="store_true",
                         help="copy the unmasked pixels back exactly (default: as the model "
                         "decodes them)")
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
    paths = output.planned_paths(args.out, args.batch_size, args.overwrite)
    image = open_image(args.image, "RGB")
    common.warn_about_unknown_words(args, args.vocabularies)
    pipe = common.load_pipeline(args, image.height, image.width)
    started = time.perf_counter()
    images = pipe.image_to_image(args.prompt, image, strength=args.strength,
                                 **common.sampling_kwargs(args))
    quiet.report_made(images, started)
    output.save_all(images, paths, args.overwrite)


def run_inpaint(args):
    paths = output.planned_paths(args.out, args.batch_size, args.overwrite)
    image, mask = open_image(args.image, "RGB"), open_image(args.mask, "L")
    common.warn_about_unknown_words(args, args.vocabularies)
    pipe = common.load_pipeline(args, image.height, image.width)
    started = time.perf_counter()
    images = pipe.inpaint(args.prompt, image, mask, strength=args.strength,
                          paste_original=args.paste_original, **common.sampling_kwargs(args))
    quiet.report_made(images, started)
    output.save_all(images, paths, args.overwrite)
