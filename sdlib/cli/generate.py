"""``python -m sdlib generate "a prompt" --out image.png``: text to image, saved as PNG."""

from sdlib.cli import common


def add_parser(commands):
    generate = commands.add_parser("generate", help="text to image, saved as PNG")
    generate.add_argument("prompt")
    common.add_sampling_arguments(generate)
    common.add_model_arguments(generate)
    generate.add_argument("--height", type=int, default=None)
    generate.add_argument("--width", type=int, default=None)
    generate.set_defaults(run=run)


def run(args):
    paths = common.planned_paths(args)
    pipe = common.load_pipeline(args, args.height, args.width)
    images = pipe.text_to_image(args.prompt, **common.sampling_kwargs(args))
    common.save_all(images, paths, args.overwrite)
