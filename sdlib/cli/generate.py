"""``python -m sdlib generate "a prompt" --out image.png``: text to image, saved as PNG, JPEG or
WebP."""

import time

from sdlib.cli import common, output, quiet


def add_parser(commands):
    generate = commands.add_parser("generate", help="text to image",
                                   description="Text to image: draw what the prompt says.",
                                   formatter_class=common.HelpWithDefaults)
    generate.add_argument("prompt", help="what to draw")
    common.add_sampling_arguments(generate)
    common.add_model_arguments(generate)
    generate.add_argument("--height", type=int, default=None,
                          help="image height in pixels (default: the model's: 512 for sd-v1-5, "
                          "64 for the mini and tiny models)")
    generate.add_argument("--width", type=int, default=None,
                          help="image width in pixels (default: the model's)")
    generate.set_defaults(run=run)


def run(args):
    paths = output.planned_paths(args.out, args.batch_size, args.overwrite)
    common.warn_about_unknown_words(args, args.vocabularies)
    pipe = common.load_pipeline(args, args.height, args.width)
    started = time.perf_counter()
    images = pipe.text_to_image(args.prompt, **common.sampling_kwargs(args))
    quiet.report_made(images, started)
    output.save_all(images, paths, args.overwrite)
