"""What the commands share: choosing the model, the sampling options, and writing PNGs safely
(never over an existing file unless asked, atomically, checked before any work)."""

import os
import tempfile

from PIL import Image

from sdlib.pipeline import StableDiffusion

DEFAULT_PRESET = "mini-shapes"


def save_png(image, path, overwrite=False):
    """Write a uint8 (H, W, 3) image atomically; never replace an existing file unless asked."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it, or choose "
                              "another --out.")
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".sdlib-", suffix=".png")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; a saved image gets normal permissions
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(image).save(stream, format="PNG")
        if not overwrite and os.path.exists(path):  # appeared while we were writing
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it.")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def output_paths(out, count):
    if count == 1:
        return [out]
    stem, extension = os.path.splitext(out)
    return [f"{stem}-{index}{extension or '.png'}" for index in range(count)]


def add_model_arguments(parser):
    parser.add_argument("--preset", default=None,
                        help=f"named model: {DEFAULT_PRESET} (default), sd-v1-5, "
                        "sd-v1-5-inpainting, tiny")
    parser.add_argument("--weights", default=None,
                        help="a diffusers folder, a .safetensors file or a hub repo id")
    parser.add_argument("--no-jit", action="store_true",
                        help="run without XLA compilation (default: the mode measured fastest "
                        "for the model on this device)")


def add_sampling_arguments(parser, steps=50):
    parser.add_argument("--out", default="image.png", help="output PNG (batch: name-0.png, ...)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "euler", "dpmpp_2m"])
    parser.add_argument("--batch-size", type=int, default=1)


def planned_paths(args):
    """The output files, refused before minutes of work if one exists and --overwrite is off."""
    paths = output_paths(args.out, args.batch_size)
    existing = [path for path in paths if os.path.exists(path)]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} already exists; pass --overwrite to replace it, or "
                              "choose another --out.")
    return paths


def load_pipeline(args, height=None, width=None):
    """The model that --weights or --preset names (mini-shapes, offline, by default)."""
    if args.weights and args.preset:
        raise ValueError("give either --weights or --preset, not both.")
    jit_compile = False if args.no_jit else "auto"
    if args.weights:
        pipe = StableDiffusion.from_pretrained(args.weights, img_height=height or 512,
                                               img_width=width or 512, jit_compile=jit_compile)
    else:
        real_weights = os.environ.get("SDLIB_SD15_WEIGHTS")
        preset = args.preset or ("sd-v1-5" if real_weights else DEFAULT_PRESET)
        if preset == "mini-shapes" and not args.preset:
            print("using mini-shapes, the miniature model shipped with sdlib (offline default; "
                  "--weights PATH or $SDLIB_SD15_WEIGHTS for real Stable Diffusion)")
        pipe = StableDiffusion.from_preset(preset, img_height=height, img_width=width,
                                           jit_compile=jit_compile)
    print(f"model: {pipe}")
    return pipe


def sampling_kwargs(args):
    return dict(negative_prompt=args.negative_prompt, batch_size=args.batch_size,
                num_steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                sampler=args.sampler)


def save_all(images, paths, overwrite):
    for image, path in zip(images, paths, strict=True):
        print(f"saved {save_png(image, path, overwrite=overwrite)}")
