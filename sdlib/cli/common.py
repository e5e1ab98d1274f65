"""What the commands share: choosing the model, the sampling options, and the warning for words a
model never saw."""

import argparse
import os
import sys

from sdlib.cli import quiet
from sdlib.pipeline import StableDiffusion
from sdlib.presets import PRESETS
from sdlib.sampling.samplers import SAMPLERS

DEFAULT_PRESET = "mini-shapes"
REAL_WEIGHTS_ENV = "SDLIB_SD15_WEIGHTS"


class HelpWithDefaults(argparse.HelpFormatter):
    """Each option's help ends with its default; an option without one (None, or a flag) says in
    its help what happens when it is not given."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                and "%(default)" not in help_text):
            help_text += " (default: %(default)s)"
        return help_text


def add_model_arguments(parser):
    parser.add_argument("--preset", default=None, choices=list(PRESETS), metavar="NAME",
                        help=f"named model: {', '.join(PRESETS)} (default: {DEFAULT_PRESET}, "
                        f"or sd-v1-5 when ${REAL_WEIGHTS_ENV} names its weights)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="instead of --preset: a diffusers folder, a .safetensors file or a "
                        "hub repo id (default: none, the preset)")
    parser.add_argument("--no-jit", action="store_true",
                        help="run without XLA compilation (default: the mode measured fastest "
                        "for the model on this device)")


def add_sampling_arguments(parser, steps=50):
    parser.add_argument("--out", default="image.png", metavar="FILE",
                        help="the image file, its format from the extension: .png, .jpg, .jpeg or "
                        ".webp; its folder must exist, and a folder is refused (a batch adds -0, "
                        "-1, ... before the extension)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (default: refuse, before any work)")
    parser.add_argument("--negative-prompt", default=None, metavar="TEXT",
                        help="what to steer away from (default: none, the empty prompt)")
    parser.add_argument("--steps", type=int, default=steps, help="denoising steps")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the initial noise, for a repeatable image (default: random)")
    parser.add_argument("--guidance", type=float, default=7.5,
                        help="classifier-free guidance scale: higher follows the prompt more "
                        "closely; 1 turns guidance off")
    parser.add_argument("--sampler", default="ddim", choices=SAMPLERS,
                        help="the sampling method")
    parser.add_argument("--batch-size", type=int, default=1, help="how many images to make")


def chosen_preset(args):
    """The preset the run uses, or None when --weights names a checkpoint."""
    if args.weights and args.preset:
        raise ValueError("give either --weights or --preset, not both.")
    if args.weights:
        return None
    return args.preset or ("sd-v1-5" if os.environ.get(REAL_WEIGHTS_ENV) else DEFAULT_PRESET)


def warn_about_unknown_words(args, vocabularies):
    """Name the words of the prompts that the chosen model never saw, before it loads.

    ``vocabularies``: {preset name: (unknown_words(prompt) -> words, what it knows)}, for the
    models that know only a few words (the mini models).
    """
    preset = chosen_preset(args)
    if preset not in vocabularies:
        return
    unknown_words, known = vocabularies[preset]
    for what, text in (("prompt", args.prompt), ("negative prompt", args.negative_prompt)):
        words = unknown_words(text or "")
        if words:
            print(f"warning: {preset} never saw these words of the {what}: {', '.join(words)}; "
                  f"it knows {known}", file=sys.stderr)


def load_pipeline(args, height=None, width=None):
    """The model that --weights or --preset names (mini-shapes, offline, by default)."""
    preset = chosen_preset(args)
    jit_compile = False if args.no_jit else "auto"
    if preset is None:
        pipe = StableDiffusion.from_pretrained(args.weights, img_height=height or 512,
                                               img_width=width or 512, jit_compile=jit_compile)
    else:
        if preset == DEFAULT_PRESET and not args.preset:
            print(f"using {DEFAULT_PRESET}, the miniature model shipped with sdlib (offline "
                  f"default; --weights PATH or ${REAL_WEIGHTS_ENV} for real Stable Diffusion)")
        pipe = StableDiffusion.from_preset(preset, img_height=height, img_width=width,
                                           jit_compile=jit_compile)
    print(f"model: {pipe}")
    return pipe


def sampling_kwargs(args):
    return dict(negative_prompt=args.negative_prompt, batch_size=args.batch_size,
                num_steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                sampler=args.sampler, verbose=quiet.live_progress())
