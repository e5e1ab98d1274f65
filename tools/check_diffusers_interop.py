"""Check, by hand, that what sdlib writes opens in diffusers and gives the same images as sdlib:
models exported with ``pipe.save_pretrained`` (mini-shapes and its 9-channel inpainting model), the
LoRA sdlib trained and wrote (``save_lora_file``, diffusers' PEFT format), the textual-inversion
embedding it learned, and a folder saved with that embedding's token in it.

Run it in sdlib's environment and name a second one with torch, diffusers and transformers (as for
the fixture scripts; torch is never a test dependency):

    python tools/check_diffusers_interop.py --reference-python ../refenv/bin/python

The sdlib side exports the models and generates with fixed initial noise (25 DDIM steps, guidance
7.5, float32, no XLA); then the same script, run by the reference interpreter with
``--diffusers-side``, loads everything with diffusers and generates from the same noise; last, the
sdlib side prints the largest differences (final latents, and decoded images in 0-255 levels).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STEPS, GUIDANCE = 25, 7.5
PROMPTS = ["a large red triangle in the center on a white background",
           "a small blue circle in the top left on a black background"]
INPAINT_PROMPT = "a small green square in the bottom right on a white background"
WORD_PROMPT = "a large <my-favourite> in the top right on a black background"


# === sdlib side ===
def sdlib_side(work, reference_python):
    import sdlib
    from sdlib import presets

    def load(preset):
        return sdlib.StableDiffusion.from_preset(preset, jit_compile=False, dtype="float32")

    def generate(pipe, prompts, noise, **kwargs):
        """Final latents (B, h, w, C) and uint8 images, from ``noise``."""
        final = {}
        images = pipe.text_to_image(prompts, num_steps=STEPS, guidance_scale=GUIDANCE,
                                    diffusion_noise=noise, verbose=False,
                                    callback=lambda state: final.update(state), **kwargs)
        return final["latents"], images

    rng = np.random.default_rng(0)
    pipe = load("mini-shapes")
    noise = rng.standard_normal((len(PROMPTS), *pipe.latent_shape), dtype=np.float32)
    ours, cases = {}, {}

    pipe.save_pretrained(work / "mini-shapes")
    ours["base"] = generate(pipe, PROMPTS, noise)
    cases["base"] = {"folder": "mini-shapes", "prompts": PROMPTS}

    lora = presets.SHIPPED_LORAS["mini-shapes-held-out"]
    pipe.load_lora_weights(lora, scale=0.8)
    ours["lora"] = generate(pipe, PROMPTS, noise)
    cases["lora"] = {"folder": "mini-shapes", "prompts": PROMPTS, "lora": str(lora.resolve()),
                     "lora_scale": 0.8}
    pipe.unload_lora_weights()

    embedding = presets.SHIPPED_EMBEDDINGS["<my-favourite>"]
    pipe.load_textual_inversion(embedding, token="<my-favourite>")
    ours["word"] = generate(pipe, [WORD_PROMPT] * 2, noise)
    cases["word"] = {"folder": "mini-shapes", "prompts": [WORD_PROMPT] * 2,
                     "embedding": str(embedding.resolve()), "token": "<my-favourite>"}
    pipe.save_pretrained(work / "mini-shapes-with-word")  # the token saved in the folder
    cases["saved_word"] = {"folder": "mini-shapes-with-word", "prompts": [WORD_PROMPT] * 2}
    ours["saved_word"] = ours["word"]

    inpaint = load("mini-shapes-inpaint")
    inpaint.save_pretrained(work / "mini-shapes-inpaint")
    image = pipe.text_to_image(PROMPTS[:1], num_steps=STEPS, seed=3, verbose=False)  # (1, H, W, 3)
    mask = np.zeros(image.shape[:3], np.uint8)  # (1, H, W)
    mask[:, inpaint.img_height // 2:, inpaint.img_width // 2:] = 255
    final = {}
    inpainted = inpaint.inpaint(INPAINT_PROMPT, image, mask, num_steps=STEPS,
                                guidance_scale=GUIDANCE, diffusion_noise=noise[:1], verbose=False,
                                callback=lambda state: final.update(state))
    ours["inpaint"] = final["latents"], inpainted
    cases["inpaint"] = {"folder": "mini-shapes-inpaint", "prompts": [INPAINT_PROMPT],
                        "inpaint": True}
    np.savez(work / "inputs.npz", noise=noise, image=image, mask=mask)
    (work / "cases.json").write_text(json.dumps(cases, indent=2))

    print(f"exported to {work}; running diffusers with {reference_python} ...", flush=True)
    subprocess.run([reference_python, __file__, "--diffusers-side", str(work)], check=True)
    theirs = np.load(work / "diffusers.npz")
    print(f"\n{'case':<11} {'max |latent diff|':>18} {'max |image diff| (0-255)':>25} "
          f"{'pixels differing':>17}")
    worst = 0.0
    for case, (latents, images) in ours.items():
        latent_error = float(np.abs(latents - theirs[f"{case}_latents"]).max())
        difference = np.abs(images.astype(int) - theirs[f"{case}_images"].astype(int))
        print(f"{case:<11} {latent_error:>18.2e} {int(difference.max()):>25d} "
              f"{(difference > 0).mean():>16.2%}")
        worst = max(worst, latent_error)
    print(f"\nworst latent difference {worst:.2e}: "
          + ("the same images (float32 rounding)" if worst < 1e-3 else "DIFFERENT"))
    return 0 if worst < 1e-3 else 1


# === diffusers side (the reference interpreter) ===
def diffusers_side(work):
    import torch
    from diffusers import (
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
    )

    # sdlib encodes images to the posterior mean (deterministic); diffusers' inpainting pipeline
    # samples it, so it is told to take the mean, as tools/make_editing_fixtures.py does.
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_inpaint
    pipeline_stable_diffusion_inpaint.retrieve_latents = (
        lambda output, generator=None, sample_mode="sample": output.latent_dist.mode())

    cases = json.loads((work / "cases.json").read_text())
    inputs = np.load(work / "inputs.npz")
    noise = torch.from_numpy(inputs["noise"]).permute(0, 3, 1, 2)  # NHWC -> NCHW
    results = {}
    for case, spec in cases.items():
        kind = StableDiffusionInpaintPipeline if spec.get("inpaint") else StableDiffusionPipeline
        pipe = kind.from_pretrained(work / spec["folder"], local_files_only=True)
        assert isinstance(pipe.scheduler, DDIMScheduler), type(pipe.scheduler)
        pipe.set_progress_bar_config(disable=True)
        if "lora" in spec:
            pipe.load_lora_weights(spec["lora"], adapter_name="lora")
            pipe.set_adapters(["lora"], [spec["lora_scale"]])
        if "embedding" in spec:
            pipe.load_textual_inversion(spec["embedding"], token=spec["token"])
        prompts = spec["prompts"]
        kwargs = dict(prompt=prompts, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                      latents=noise[:len(prompts)], eta=0.0)
        if spec.get("inpaint"):
            kwargs.update(image=torch.from_numpy(inputs["image"]).permute(0, 3, 1, 2) / 255.0,
                          mask_image=torch.from_numpy(inputs["mask"][:, None] / 255.0),
                          height=inputs["image"].shape[1], width=inputs["image"].shape[2])
        with torch.no_grad():
            latents = pipe(**kwargs, output_type="latent").images
            images = pipe(**kwargs, output_type="np").images  # (B, H, W, 3) in [0, 1]
        results[f"{case}_latents"] = latents.permute(0, 2, 3, 1).float().numpy()
        results[f"{case}_images"] = np.round(images * 255).astype(np.uint8)
        print(f"  diffusers: {case} done", flush=True)
    np.savez(work / "diffusers.npz", **results)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--reference-python", help="an interpreter with torch and diffusers")
    parser.add_argument("--out", help="keep the exported folders here (default: a temporary one)")
    parser.add_argument("--diffusers-side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.diffusers_side:
        return diffusers_side(Path(args.diffusers_side))
    if not args.reference_python:
        parser.error("--reference-python is required (an environment with torch and diffusers)")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        return sdlib_side(Path(args.out), args.reference_python)
    with tempfile.TemporaryDirectory() as work:
        return sdlib_side(Path(work), args.reference_python)


if __name__ == "__main__":
    sys.exit(main())
