"""The Stable Diffusion pipeline: encode the text, denoise a latent, decode (Rombach et al. 2022).

``text_to_image`` is ``encode_text`` then ``generate_image``, so an encoding can be reused (a latent
walk interpolates two of them). ``generate_image`` is three steps, as keras-hub's SD3 tasks are:
prepare (check the arguments, pair each conditional encoding with its unconditional one, draw the
initial latent), denoise (a sampler's plan, from any of its steps: image-to-image starts later) and
decode. One compiled denoising step runs the UNet once on the batch [unconditional, conditional]
(classifier-free guidance, Ho & Salimans 2022) and applies the sampler update; its inputs are all
tensors, so a new prompt, seed, guidance scale, step count or start step reuses it. A sampler that
injects noise between steps (LCM) gets it as one more input, drawn in numpy from the run's seed
after the initial latent; the others get zeros. LCM's step, at guidance <= 1 (an LCM-LoRA's
recipe), runs the UNet on the conditional half alone, as diffusers does: a branch of the same
program (``ops.cond``), so it costs half as much and the scale still retraces nothing.

A UNet with ``time_cond_proj_dim`` (LCM-distilled: guidance was distilled into it) runs no such
batch: the step embeds the guidance scale (w = guidance_scale - 1) and runs the UNet once on the
conditional encodings, as diffusers' pipelines do for such a UNet
(``LatentConsistencyModelPipeline``, and ``StableDiffusion*Pipeline`` too). It is meant for
``sampler="lcm"``; the other samplers run it as diffusers' ``StableDiffusionPipeline`` does with
their schedulers.
"""

import time
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from sdlib import device, distribution, editing, loading, presets, validation
from sdlib.adapters import AdapterMethods
from sdlib.backend import CompiledFunction, to_numpy
from sdlib.loading.build import Components, random_components
from sdlib.models.unet import guidance_scale_embedding
from sdlib.progress import StepProgress
from sdlib.sampling.samplers import SAMPLERS, make_sampler


class Edit(NamedTuple):
    """What image-to-image and inpainting add to a denoising step; ``StableDiffusion._no_edit``
    (ones and zeros) makes the step plain text-to-image.

    - ``repaint`` (B, h, w, 1): 1 where the sampler's latent stays, 0 where the image's comes back
      (inpainting with a 4-channel UNet);
    - ``image_latents``, ``noise`` (B, h, w, C): the image's latent and the noise mixed into it;
    - ``conditioning`` (B, h, w, C_in - C): what a 9-channel inpainting UNet reads beside the
      latent, the latent-grid mask and the masked image's latent (no channels for other UNets).
    """

    repaint: object
    image_latents: object
    noise: object
    conditioning: object


class StableDiffusion(AdapterMethods):
    """Text-to-image with Stable Diffusion v1. Build it with ``from_preset`` or ``from_pretrained``,
    or from :class:`sdlib.Components` (what the loaders return).

    Several devices, one process (JAX): set a Keras distribution before building the pipeline,
    ``keras.distribution.set_distribution(keras.distribution.DataParallel())`` (or build it inside
    ``with keras.distribution.DataParallel().scope():``). The weights are then replicated on every
    device, and each batch (a multiple of the device count) is split over them: the same images
    as on one device, B / n per device (``sdlib.distribution``). TensorFlow and torch refuse one.
    """

    def __init__(self, components, img_height, img_width, jit_compile="auto", compile_loop=False,
                 name="custom"):
        if not isinstance(components, Components):
            raise TypeError("StableDiffusion takes a sdlib.Components (text_encoder, unet, vae, "
                            "tokenizer, scheduler_config), as from_preset and from_pretrained "
                            f"build it; got a {type(components).__name__}.")
        self.components = components
        self.text_encoder, self.unet = components.text_encoder, components.unet
        self.vae, self.tokenizer = components.vae, components.tokenizer
        self.name = name
        # The keras.distribution active now (None: one device): the weights were laid out for it,
        # so every call shards its batch over the same devices.
        self.distribution = distribution.pipeline_distribution(
            [self.text_encoder, self.unet, self.vae])
        self.vae_scale_factor = self.vae.config.scale_factor
        validation.check_image_size(img_height, img_width, self.vae_scale_factor)
        self.img_height, self.img_width = int(img_height), int(img_width)
        mode = device.resolve_mode(jit_compile, self.unet.dtype_policy.name, self.unet.config)
        self.jit_compile = mode.jit_compile
        # True: the whole denoising loop is one compiled program (no per-step callback or progress
        # bar); False: one compiled step driven from Python.
        self.compile_loop = bool(compile_loop)
        # The tokenizer pads to its max_length (77), which may be shorter than the text encoder's
        # position table; encodings are (B, max_length, hidden_size).
        self.context_shape = (self.tokenizer.max_length, self.text_encoder.config.hidden_size)
        # An LCM-distilled UNet takes the guidance scale as an input: one encoding per image, not
        # the [unconditional; conditional] pair of classifier-free guidance.
        self.embeds_guidance = self.unet.config.time_cond_proj_dim is not None
        self._encodings_per_image = 1 if self.embeds_guidance else 2
        # The VAE decides the latent: an inpainting UNet takes 9 channels in and gives 4 out.
        self.latent_shape = (self.img_height // self.vae_scale_factor,
                             self.img_width // self.vae_scale_factor,
                             self.vae.config.latent_channels)
        self._encode_fn = CompiledFunction(self._encode_graph, [self.text_encoder],
                                           self.jit_compile)
        # One compiled step (and loop) per sampler family: DDIM, the linear samplers (Euler,
        # DPM-Solver++) that share an update and differ only in their per-step coefficients, LCM.
        self._samplers = {sampler: make_sampler(sampler, components.scheduler_config)
                          for sampler in SAMPLERS}
        self.scheduler = self._samplers["ddim"].scheduler  # timesteps and alphas, for chapters
        self._step_fns, self._loop_fns, self._noise_rows = {}, {}, {}
        for sampler in self._samplers.values():
            if sampler.family not in self._step_fns:
                # LCM samples at guidance 1 (an LCM-LoRA's recipe): its step skips the
                # unconditional half there; the other samplers' steps stay one UNet pass.
                skip = sampler.family == "lcm"
                self._step_fns[sampler.family] = CompiledFunction(
                    self._make_step_graph(sampler.update, skip), [self.unet], self.jit_compile)
                self._loop_fns[sampler.family] = CompiledFunction(
                    self._make_loop_graph(sampler.update, skip), [self.unet], self.jit_compile)
                # The compiled loop reads the injected noises as one stack, padded to the most
                # steps the sampler runs; a deterministic sampler's is one row of zeros.
                self._noise_rows[sampler.family] = (sampler.max_steps if sampler.injects_noise
                                                    else 1)
        self._decode_fn = CompiledFunction(self._decode_graph, [self.vae], self.jit_compile)
        self._encode_image_fn = CompiledFunction(self._encode_image_graph, [self.vae],
                                                 self.jit_compile)
        self._init_adapters()

    # === Constructors ===
    @classmethod
    def from_preset(cls, preset, img_height=None, img_width=None, jit_compile="auto",
                    load_weights=True, dtype="auto", compile_loop=False):
        """A named model (``"sd-v1-5"``, ``"mini-shapes"``, ``"tiny"``); see ``sdlib.presets``.

        ``jit_compile``: True (XLA), False, or "auto". ``dtype`` is a Keras dtype policy
        (``sdlib.validation.DTYPES``): None/"float32", "mixed_bfloat16" or "mixed_float16" (16-bit
        compute, float32 weights), "bfloat16" or "float16" (16-bit weights too: the fast choice for
        inference), or "auto". "auto" (the default) picks the mode measured fastest for this model
        on this device (``sdlib.device.FASTEST_MODES``): on a CPU, XLA in float32 for the miniature
        models and bfloat16 without XLA for SD v1.5; on a GPU, XLA with 16-bit weights.
        ``load_weights=False``: seeded random weights (parameter counts, benchmarks).
        """
        spec = presets.get_preset(preset)
        img_height = spec.image_size if img_height is None else img_height
        img_width = spec.image_size if img_width is None else img_width
        weights = loading.preset_weights(spec) if load_weights else None
        if weights is not None:
            return cls._load(loading.open_checkpoint(weights), img_height, img_width, jit_compile,
                             dtype, compile_loop, name=preset)
        configs = spec.configs()
        validation.check_image_size(img_height, img_width, configs["vae"].scale_factor)
        mode = device.resolve_mode(jit_compile, dtype, configs["unet"])
        return cls(random_components(configs, dtype=mode.dtype), img_height, img_width,
                   jit_compile=mode.jit_compile, compile_loop=compile_loop, name=preset)

    @classmethod
    def from_pretrained(cls, path_or_repo_id, img_height=512, img_width=512, jit_compile="auto",
                        variant=None, token=None, config_path=None, dtype="auto",
                        compile_loop=False):
        """Load a diffusers folder, a single ``.safetensors`` file, or (with network) a hub repo id.

        ``variant="fp16"`` picks ``*.fp16.safetensors`` files in a folder. A single file needs the
        architecture: the SD v1 one is assumed unless ``config_path`` names a diffusers folder.
        ``jit_compile`` and ``dtype`` as in ``from_preset``.
        """
        validation.check_jit_compile(jit_compile)  # before reading anything: fail in seconds
        validation.check_dtype(dtype)
        checkpoint = loading.open_checkpoint(path_or_repo_id, variant=variant, token=token,
                                             config_path=config_path)
        return cls._load(checkpoint, img_height, img_width, jit_compile, dtype, compile_loop,
                         name=str(path_or_repo_id))

    @classmethod
    def _load(cls, checkpoint, img_height, img_width, jit_compile, dtype, compile_loop, name):
        validation.check_image_size(img_height, img_width, checkpoint.configs["vae"].scale_factor)
        mode = device.resolve_mode(jit_compile, dtype, checkpoint.configs["unet"])
        return cls(checkpoint.load(mode.dtype), img_height, img_width, jit_compile=mode.jit_compile,
                   compile_loop=compile_loop, name=name)

    def save_pretrained(self, folder, dtype=None):
        """Write this pipeline as a diffusers folder (``StableDiffusionPipeline.from_pretrained``
        and ``sdlib.StableDiffusion.from_pretrained`` open it): the weights as they are now, so
        loaded LoRAs are saved merged at their scales, and added textual-inversion tokens with
        their embeddings. ``dtype`` ("float32", "float16", ...) converts the weights; None keeps
        each model's own."""
        if dtype is not None:
            dtype = validation.check_save_dtype(dtype)
        loading.save_folder(self.components, folder, (self.img_height, self.img_width), dtype)

    # === Compiled pieces ===
    def _encode_graph(self, token_ids):
        return ops.cast(self.text_encoder(token_ids), "float32")  # (B, 77, D)

    def _make_step_graph(self, update, skip_unconditional=False):
        def step(latents, previous_x0, context, timestep, coefficients, noise, guidance_scale,
                 edit):
            """One guided denoising step. ``context`` is [unconditional; conditional], (2B, 77, D)
            (the conditional alone, (B, 77, D), for a UNet that embeds the guidance scale);
            ``coefficients[0]`` scales the model input, the last two are the kept region's noise
            level after the step, the rest belong to the sampler's update. ``noise`` (B, h, w, C)
            is what the step injects (LCM; zeros otherwise). ``edit`` is ``Edit``: zeros and ones
            for text-to-image, so one compiled step serves every task. With
            ``skip_unconditional``, a guidance scale <= 1 runs the UNet on the conditional half
            alone (diffusers' ``do_classifier_free_guidance`` off): a conditional branch in the
            same program, so the scale stays an input and nothing retraces."""
            batch = ops.shape(latents)[0]
            scaled = latents * coefficients[0]
            # A 9-channel inpainting UNet also reads the mask and the masked image's latents.
            model_input = ops.concatenate([scaled, edit.conditioning], axis=-1)  # (B, h, w, C_in)
            compute_dtype = self.unet.compute_dtype

            def predict(inputs, encoding, timestep_cond=None):
                timesteps = ops.full((ops.shape(inputs)[0],), timestep, dtype="float32")
                output = self.unet(ops.cast(inputs, compute_dtype), timesteps,
                                   ops.cast(encoding, compute_dtype), timestep_cond=timestep_cond)
                return ops.cast(output, "float32")  # sampler math stays float32

            if self.embeds_guidance:
                # Guidance distilled into the UNet (Luo et al. 2023, sec. 4.2): the scale is an
                # input, w = guidance_scale - 1 as in diffusers, and one pass replaces two.
                w = ops.full((batch,), guidance_scale - 1.0, dtype="float32")  # (B,)
                guided = predict(model_input, context, guidance_scale_embedding(
                    w, self.unet.config.time_cond_proj_dim))  # (B, h, w, C)
            else:
                def classifier_free():
                    noise_pred = predict(ops.concatenate([model_input, model_input],
                                                         axis=0), context)  # (2B, h, w, C)
                    uncond, cond = noise_pred[:batch], noise_pred[batch:]
                    # diffusers skips guidance when guidance_scale <= 1: the conditional one.
                    guided = uncond + guidance_scale * (cond - uncond)
                    return ops.where(guidance_scale > 1.0, guided, cond)

                if skip_unconditional:  # the conditional half of the context: rows B..2B
                    guided = ops.cond(guidance_scale > 1.0, classifier_free,
                                      lambda: predict(model_input, context[batch:]))
                else:
                    guided = classifier_free()
            x_next, x0 = update(guided, latents, previous_x0, coefficients, noise)
            # Inpainting with a text-to-image UNet: where the mask keeps the image, the latent goes
            # back to the image noised to the next step's level (the clean image after the last).
            kept = coefficients[-2] * edit.image_latents + coefficients[-1] * edit.noise
            return edit.repaint * x_next + (1.0 - edit.repaint) * kept, x0

        return step

    def _make_loop_graph(self, update, skip_unconditional=False):
        step = self._make_step_graph(update, skip_unconditional)

        def loop(latents, context, timesteps, coefficients, noises, num_steps, guidance_scale,
                 edit):
            """All ``num_steps`` steps in one program. The schedules are padded to a fixed length
            and ``num_steps`` is a tensor, so another step count reuses the compiled loop.
            ``noises`` (R, B, h, w, C): step i injects row min(i, R - 1) (R = 1: zeros, read by
            every step of a deterministic sampler)."""
            last_row = noises.shape[0] - 1

            def body(index, carry):
                noise = noises[ops.minimum(index, last_row)]  # (B, h, w, C)
                return step(carry[0], carry[1], context, timesteps[index], coefficients[index],
                            noise, guidance_scale, edit)

            return ops.fori_loop(0, num_steps, body, (latents, ops.zeros_like(latents)))[0]

        return loop

    def _encode_image_graph(self, pixels):
        mean, _ = self.vae.encode(ops.cast(pixels, self.vae.compute_dtype))  # posterior mean
        return ops.cast(mean, "float32") * self.vae.config.scaling_factor  # (B, h, w, C)

    def _decode_graph(self, latents):
        # StableDiffusionPipeline divides by scaling_factor only (a VAE's shift_factor is for SD3).
        latents = latents / self.vae.config.scaling_factor
        image = self.vae.decode(ops.cast(latents, self.vae.compute_dtype))
        return ops.clip(ops.cast(image, "float32") / 2.0 + 0.5, 0.0, 1.0)  # (B, H, W, 3) in [0, 1]

    # === Public API ===
    def encode_text(self, prompt):
        """Prompt(s) -> text encoding (B, 77, D), float32 numpy."""
        prompts = validation.check_prompt(prompt)
        token_ids = ops.convert_to_tensor(self.tokenizer(prompts), dtype="int32")  # (B, 77)
        return to_numpy(self._encode_fn(self._shard(token_ids)))

    def text_to_image(self, prompt, negative_prompt=None, batch_size=1, num_steps=50,
                      guidance_scale=7.5, seed=None, diffusion_noise=None, callback=None,
                      verbose=True, sampler="ddim"):
        """Generate images for ``prompt``; returns uint8 numpy (B, H, W, 3).

        A single prompt with ``batch_size=n`` gives n images; a list of n prompts gives one image
        each. ``seed``: an int (one generator for the batch, as before), or a list of ints, one
        per image: image i then depends on its prompt, ``seed[i]`` and the settings alone, not on
        its batch or position (many-image jobs). ``diffusion_noise`` (B, H/f, W/f, C) fixes the
        initial latent instead of ``seed``.
        """
        prompts = validation.check_prompt(prompt)
        batch_size = validation.check_batch_size(batch_size, prompts)
        if len(prompts) == 1:
            prompts = prompts * batch_size  # encode B rows, like the negatives: one compiled shape
        context = self.encode_text(prompts)
        return self.generate_image(context, negative_prompt=negative_prompt, batch_size=batch_size,
                                   num_steps=num_steps, guidance_scale=guidance_scale, seed=seed,
                                   diffusion_noise=diffusion_noise, callback=callback,
                                   verbose=verbose, sampler=sampler)

    def generate_image(self, context, negative_prompt=None, batch_size=1, num_steps=50,
                       guidance_scale=7.5, seed=None, diffusion_noise=None,
                       unconditional_context=None, callback=None, verbose=True, sampler="ddim"):
        """Denoise from noise to an image, conditioned on a text encoding ``context`` (B, 77, D).

        ``callback``, if given, is called after every step with a dict: ``step`` (0-based),
        ``timestep``, ``latents`` (x_{t-1}) and ``denoised`` (the predicted x_0; LCM: the
        consistency function's output), numpy NHWC.
        ``sampler``: "ddim" (default, 50 steps), "euler" or "dpmpp_2m" (good in 15-25 steps), or
        "lcm" (1-8 steps, for LCM-distilled UNets or an LCM-LoRA; guidance 1-2). LCM injects noise
        between steps: with ``seed``, the initial latent is the first
        ``default_rng(seed).standard_normal((B, h, w, C))`` draw and each injected noise the next;
        with ``diffusion_noise``, the injected noises are ``default_rng(seed)``'s draws.

        An LCM-distilled UNet (``embeds_guidance``: its config has ``time_cond_proj_dim``) reads
        ``guidance_scale`` as an input (diffusers' ``LatentConsistencyModelPipeline``: 4 steps,
        guidance 8.5 by default) and runs no unconditional pass, so it takes no negative prompt or
        ``unconditional_context``. Use it with ``sampler="lcm"``, which it was distilled for; the
        other samplers run it too, as diffusers' ``StableDiffusionPipeline`` does.
        """
        chosen = self._sampler(sampler)
        self._check_text_to_image_unet()
        num_steps = validation.check_num_steps(num_steps, chosen.max_steps, chosen.steps_hint)
        guidance_scale = validation.check_guidance_scale(guidance_scale)
        seed = validation.check_seed(seed)
        contexts = self._paired_contexts(context, negative_prompt, unconditional_context,
                                         batch_size)  # (2B, 77, D); (B, 77, D) embeds_guidance
        plan = chosen.plan(num_steps)
        latents, rng = self._draw_noise(contexts.shape[0] // self._encodings_per_image, seed,
                                        diffusion_noise)
        latents = self.denoise(latents * np.float32(plan.init_noise_sigma), contexts, plan,
                               guidance_scale, callback=callback, verbose=verbose, noise_rng=rng)
        return self.decode_latents(latents)

    def denoise(self, latents, contexts, plan, guidance_scale, callback=None, verbose=True,
                edit=None, noise_rng=None):
        """Run the steps of ``plan`` (``sampler.plan(num_steps, start_step)``) from ``latents``.

        ``contexts``: [unconditional; conditional] encodings (2B, 77, D), or the conditional ones
        alone (B, 77, D) where the UNet embeds the guidance scale; ``edit``: an ``Edit``
        for inpainting (None: none); ``noise_rng``: the numpy Generator that draws the noise a
        sampler injects between steps (LCM), one ``standard_normal((B, h, w, C))`` per such step in
        step order (None: fresh entropy). Returns the final latents (B, h, w, C), scaled as the
        sampler produces them (``decode_latents`` takes them).
        """
        latents = ops.convert_to_tensor(latents, dtype="float32")
        contexts = ops.convert_to_tensor(contexts, dtype="float32")
        guidance = ops.convert_to_tensor(guidance_scale, dtype="float32")
        edit = Edit(*(ops.convert_to_tensor(value, dtype="float32") for value in
                      (edit or self._no_edit(latents.shape[0]))))
        distribution.check_batch(self.distribution, latents.shape[0])
        latents, contexts = self._shard(latents), self._shard(contexts)  # contexts: 2B (or B) rows
        edit = Edit(*(self._shard(value) for value in edit))
        coefficients = step_coefficients(plan)  # (n, K + 2)
        noises = injected_noises(plan, noise_rng, tuple(latents.shape))  # (n, B, h, w, C) or None
        num_steps = len(plan.timesteps)
        start = time.perf_counter()
        if self.compile_loop and callback is None:
            latents = self._run_compiled_loop(latents, contexts, plan, coefficients, noises,
                                              guidance, edit)
            if verbose:
                seconds = time.perf_counter() - start
                print(f"{num_steps}/{num_steps} denoising steps in one compiled loop: "
                      f"{seconds:.2f} s ({1000 * seconds / num_steps:.0f} ms/step)")
        else:
            step_fn = self._step_fns[plan.family]
            previous_x0 = self._shard(ops.zeros_like(latents))
            no_noise = self._shard(ops.zeros_like(latents))
            progress = StepProgress(num_steps) if verbose else None
            for index, timestep in enumerate(plan.timesteps):
                noise = (no_noise if noises is None
                         else self._shard(ops.convert_to_tensor(noises[index])))
                latents, previous_x0 = step_fn(
                    latents, previous_x0, contexts,
                    ops.convert_to_tensor(timestep, dtype="float32"),
                    ops.convert_to_tensor(coefficients[index]), noise, guidance, edit)
                if callback is not None:
                    callback({"step": index, "timestep": _plain_number(timestep),
                              "latents": to_numpy(latents), "denoised": to_numpy(previous_x0)})
                if progress is not None:
                    progress.update(index + 1)
        self.last_denoise_seconds = time.perf_counter() - start
        return latents

    def decode_latents(self, latents):
        """Latents (B, h, w, C), scaled as the sampler makes them -> uint8 images (B, H, W, 3)."""
        latents = self._shard(ops.convert_to_tensor(latents, dtype="float32"))
        images = to_numpy(self._decode_fn(latents))
        validation.check_finite_images(images)
        return np.round(images * 255.0).astype(np.uint8)

    def encode_image(self, images):
        """uint8 images (B, H, W, 3) -> scaled latent means (B, H/f, W/f, C), as sampled."""
        return self._encode_pixels(editing.to_unit_range(np.asarray(images)))

    def _encode_pixels(self, pixels):
        """Pixels in [-1, 1] (B, H, W, 3) -> the VAE posterior's mean times ``scaling_factor``."""
        pixels = self._shard(ops.convert_to_tensor(pixels, dtype="float32"))
        return to_numpy(self._encode_image_fn(pixels))

    def image_to_image(self, prompt, image, strength=0.8, negative_prompt=None, batch_size=1,
                       num_steps=50, guidance_scale=7.5, seed=None, diffusion_noise=None,
                       sampler="ddim", callback=None, verbose=True):
        """Redraw ``image`` toward ``prompt`` (SDEdit, Meng et al. 2022); uint8 (B, H, W, 3).

        The image's latent is noised to the level where the last ``int(num_steps * strength)``
        steps begin, and those steps run: strength 0.3 keeps the layout and most colors, 1.0 keeps
        little. ``image``: uint8 (H, W, 3) or (B, H, W, 3) or a PIL image, of the pipeline's size.
        ``diffusion_noise`` (B, h, w, C) is the noise mixed into the image's latent (else drawn
        from ``seed`` as in ``text_to_image``; so are LCM's injected noises, after it). The other
        arguments as in ``text_to_image``.
        """
        self._check_text_to_image_unet()
        return self._edit(prompt, image, None, strength, negative_prompt, batch_size, num_steps,
                          guidance_scale, seed, diffusion_noise, sampler, callback, verbose, False)

    def inpaint(self, prompt, image, mask, strength=1.0, negative_prompt=None, batch_size=1,
                num_steps=50, guidance_scale=7.5, seed=None, diffusion_noise=None, sampler="ddim",
                callback=None, verbose=True, paste_original=False):
        """Repaint where ``mask`` is white, toward ``prompt``; uint8 (B, H, W, 3).

        ``mask``: (H, W), (B, H, W) or (B, H, W, 1), uint8 0..255, bool or float in [0, 1], or a
        PIL image; white (>= 0.5) = repaint, black = keep. A 9-channel inpainting UNet
        (sd-v1-5-inpainting) sees the mask and the masked image; a text-to-image UNet repaints by
        blending: after every step the kept region is reset to the image at the next noise level.
        At strength 1.0 the run starts from pure noise (``diffusion_noise`` times the sampler's
        initial sigma); below, as ``image_to_image``. ``paste_original``: copy the kept pixels
        back into the output (diffusers does not; the VAE round trip changes them slightly).
        """
        return self._edit(prompt, image, mask, strength, negative_prompt, batch_size, num_steps,
                          guidance_scale, seed, diffusion_noise, sampler, callback, verbose,
                          paste_original)

    def _edit(self, prompt, image, mask, strength, negative_prompt, batch_size, num_steps,
              guidance_scale, seed, diffusion_noise, sampler, callback, verbose, paste_original):
        """image_to_image (no ``mask``) and inpaint: prepare, denoise from a later step, decode."""
        chosen = self._sampler(sampler)
        num_steps = validation.check_num_steps(num_steps, chosen.max_steps, chosen.steps_hint)
        guidance_scale = validation.check_guidance_scale(guidance_scale)
        seed = validation.check_seed(seed)
        strength = editing.check_strength(strength)
        first_step = editing.start_step(num_steps, strength)
        prompts = validation.check_prompt(prompt)
        images = editing.check_images(image, (self.img_height, self.img_width))  # (N, H, W, 3)
        masks = None if mask is None else editing.check_masks(mask, images.shape[1:3])  # (M,...)
        batch = editing.edit_batch_size(batch_size, prompts=len(prompts), images=len(images),
                                        masks=0 if masks is None else len(masks))
        contexts = self._paired_contexts(self.encode_text(prompts), negative_prompt, None, batch)
        images = editing.broadcast(images, batch)
        image_latents = self.encode_image(images)  # (B, h, w, C), the posterior means
        noise, rng = self._draw_noise(batch, seed, diffusion_noise)  # (B, h, w, C)
        plan = chosen.plan(num_steps, start_step=first_step)
        edit = self._no_edit(batch)._replace(image_latents=image_latents, noise=noise)
        if masks is None:
            latents = plan.add_noise(image_latents, noise)
        else:
            masks = editing.broadcast(masks, batch)  # (B, H, W, 1)
            small = editing.latent_mask(masks, self.vae_scale_factor)  # (B, h, w, 1)
            if self.unet.config.in_channels == self.latent_shape[-1]:
                edit = edit._replace(repaint=small)  # blend: the UNet never sees the mask
            else:
                masked = self._encode_pixels(editing.masked_pixels(images, masks))
                edit = edit._replace(conditioning=np.concatenate([small, masked], axis=-1))
            # diffusers starts inpainting at full strength from noise alone, else as image-to-image
            latents = (noise * np.float32(plan.init_noise_sigma) if strength == 1.0
                       else plan.add_noise(image_latents, noise))
        latents = self.denoise(latents, contexts, plan, guidance_scale, callback=callback,
                               verbose=verbose, edit=edit, noise_rng=rng)
        result = self.decode_latents(latents)
        if paste_original and masks is not None:
            result = np.where(masks.astype(bool), result, images)
        return result

    # === Preparing a run ===
    def _sampler(self, name):
        if name not in self._samplers:
            raise ValueError(f"Unknown sampler {name!r}; choose one of {list(SAMPLERS)}.")
        return self._samplers[name]

    def _check_text_to_image_unet(self):
        unet_channels, latent_channels = self.unet.config.in_channels, self.latent_shape[-1]
        if unet_channels != latent_channels:
            raise ValueError(f"This UNet takes {unet_channels} input channels, not the "
                             f"{latent_channels} of its latents: an inpainting UNet (the extra "
                             "channels take a mask and the masked image's latents): use "
                             "inpaint(prompt, image, mask), or load a text-to-image checkpoint.")

    def _paired_contexts(self, context, negative_prompt, unconditional_context, batch_size):
        """[unconditional; conditional] encodings, (2B, 77, D): one encoding broadcasts over
        ``batch_size``; the unconditional ones are the negative prompts' (empty by default). For a
        UNet that embeds the guidance scale, the conditional ones alone (B, 77, D)."""
        context = validation.check_context(context, self.context_shape)
        batch_size = validation.check_generate_batch(batch_size, context)

        def rows(encoding):  # (1 or B, 77, D) -> (B, 77, D)
            return np.repeat(encoding, batch_size, axis=0) if encoding.shape[0] == 1 else encoding

        if self.embeds_guidance:
            validation.check_no_negatives(negative_prompt, unconditional_context)
            return rows(context)
        if unconditional_context is None:
            negatives = validation.check_negative_prompt(negative_prompt, batch_size)
            unconditional_context = self.encode_text(negatives)
        else:
            unconditional_context = validation.check_context(unconditional_context,
                                                             self.context_shape)
        return np.concatenate([rows(unconditional_context), rows(context)], axis=0)

    def _run_compiled_loop(self, latents, contexts, plan, coefficients, noises, guidance, edit):
        length = self.scheduler.config.num_train_timesteps
        num_steps = len(plan.timesteps)
        timesteps = np.zeros(length, np.float32)
        timesteps[:num_steps] = plan.timesteps
        padded = np.zeros((length, coefficients.shape[1]), np.float32)
        padded[:num_steps] = coefficients
        stacked = np.zeros((self._noise_rows[plan.family], *latents.shape), np.float32)
        if noises is not None:
            stacked[:num_steps] = noises
        return self._loop_fns[plan.family](
            latents, contexts, ops.convert_to_tensor(timesteps), ops.convert_to_tensor(padded),
            self._shard(ops.convert_to_tensor(stacked), batch_axis=1),  # (R, B, h, w, C)
            ops.convert_to_tensor(num_steps, dtype="int32"),
            guidance, edit)

    def _shard(self, tensor, batch_axis=0):
        """``tensor`` split along ``batch_axis`` over the devices of ``self.distribution``."""
        return distribution.shard_batch(tensor, self.distribution, batch_axis)

    def _no_edit(self, batch):
        """The neutral ``Edit``: every latent is the sampler's (no mask, no image)."""
        shape = (batch, *self.latent_shape)
        extra = self.unet.config.in_channels - self.latent_shape[-1]
        return Edit(np.ones((*shape[:-1], 1), np.float32), np.zeros(shape, np.float32),
                    np.zeros(shape, np.float32), np.zeros((*shape[:-1], max(extra, 0)), np.float32))

    def _initial_latents(self, batch_size, seed, diffusion_noise):
        return self._draw_noise(batch_size, seed, diffusion_noise)[0]

    def _draw_noise(self, batch_size, seed, diffusion_noise):
        """The initial latent (B, h, w, C) and the Generator that draws the noise a sampler
        injects later: with ``seed``, the latent is ``default_rng(seed)``'s first draw and the
        injected noises its next ones; a given ``diffusion_noise`` is the latent, and
        ``default_rng(seed)`` draws the rest (fresh entropy when seed is None). A list of seeds
        gives each image its own generator, drawn the same way for one image."""
        shape = (batch_size, *self.latent_shape)
        validation.check_seed_count(seed, batch_size)
        rng = PerImageNoise(seed) if isinstance(seed, list) else np.random.default_rng(seed)
        if diffusion_noise is not None:
            noise = validation.check_diffusion_noise(diffusion_noise, shape, self.vae_scale_factor)
            return noise, rng
        return rng.standard_normal(shape, dtype=np.float32), rng  # times the initial sigma

    @property
    def trace_counts(self):
        """How often each compiled piece was traced (compiled) so far."""
        counts = {"encode": self._encode_fn.trace_count, "decode": self._decode_fn.trace_count,
                  "encode_image": self._encode_image_fn.trace_count}
        for family in self._step_fns:
            suffix = "" if family == "ddim" else f"_{family}"
            counts["step" + suffix] = self._step_fns[family].trace_count
            counts["loop" + suffix] = self._loop_fns[family].trace_count
        return counts

    def __repr__(self):
        return (f"StableDiffusion({self.name!r}, {self.img_height}x{self.img_width}, "
                f"jit_compile={self.jit_compile}, compile_loop={self.compile_loop}, "
                f"dtype={self.unet.dtype_policy.name!r}, backend={keras.backend.backend()!r})")


class PerImageNoise:
    """Draws a batch's noise image by image, each from its own ``default_rng(seed)``: an image
    then gets the same noise whatever batch it is in and wherever it stands (``seed=[...]``)."""

    def __init__(self, seeds):
        self.generators = [np.random.default_rng(seed) for seed in seeds]

    def standard_normal(self, shape, dtype=np.float32):
        """(B, ...) noise: row i is image i's generator's next (1, ...) draw."""
        if shape[0] != len(self.generators):
            raise ValueError(f"{len(self.generators)} seeds for a batch of {shape[0]} images.")
        return np.concatenate([generator.standard_normal((1, *shape[1:]), dtype=dtype)
                               for generator in self.generators])


def injected_noises(plan, rng, shape):
    """The noise each step of ``plan`` injects, (n, *shape) float32 in step order (zeros where a
    step injects none: LCM's last), drawn from ``rng`` (None: fresh entropy); None for a sampler
    that injects none."""
    if plan.noise_steps is None or not plan.noise_steps.any():
        return None
    rng = np.random.default_rng() if rng is None else rng
    return np.stack([rng.standard_normal(shape, dtype=np.float32) if draws
                     else np.zeros(shape, np.float32) for draws in plan.noise_steps])


def step_coefficients(plan):
    """Each step's sampler coefficients, then the noise level (a, b) that an inpainting latent's
    kept region is reset to after it: (n, K + 2)."""
    return np.concatenate([plan.coefficients, plan.blend_levels()], axis=1).astype(np.float32)


def _plain_number(value):
    """A timestep for Python code: int where it is whole (DDIM, DPM-Solver), else float (Euler)."""
    value = float(value)
    return int(value) if value.is_integer() else value
