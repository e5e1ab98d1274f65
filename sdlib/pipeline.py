"""The Stable Diffusion pipeline: encode the text, denoise a latent, decode it (Rombach et al. 2022).

``text_to_image`` is ``encode_text`` then ``generate_image``, so an encoding can be reused (a latent walk
interpolates two of them). One compiled denoising step runs the UNet once on the batch
[unconditional, conditional] (classifier-free guidance, Ho & Salimans 2022) and applies the sampler
update; its inputs are all tensors, so a new prompt, seed, guidance scale or step count reuses it.
"""

import time

import keras
import numpy as np
from keras import ops

from sdlib import validation
from sdlib.backend import CompiledFunction, to_numpy
from sdlib.samplers import SAMPLERS, make_sampler
from sdlib.schedulers import DDIMScheduler


class StableDiffusion:
    """Text-to-image with Stable Diffusion v1. Build it with ``from_preset`` or ``from_pretrained``."""

    def __init__(self, text_encoder, unet, vae, tokenizer, scheduler, img_height, img_width,
                 jit_compile="auto", compile_loop=False, name="custom"):
        self.text_encoder = text_encoder
        self.unet = unet
        self.vae = vae
        self.tokenizer = tokenizer
        self.scheduler = scheduler if scheduler is not None else DDIMScheduler()
        self.name = name
        self.vae_scale_factor = vae.config.scale_factor
        validation.check_image_size(img_height, img_width, self.vae_scale_factor)
        self.img_height, self.img_width = int(img_height), int(img_width)
        if validation.check_jit_compile(jit_compile) == "auto":
            from sdlib import bench

            jit_compile = bench.MODES[bench.fastest_mode(unet.config)]["jit_compile"]
        self.jit_compile = bool(jit_compile)
        # True: the whole denoising loop is one compiled program (no per-step callback or progress
        # bar); False: one compiled step driven from Python.
        self.compile_loop = bool(compile_loop)
        # The tokenizer pads to its max_length (77), which may be shorter than the text encoder's
        # position table; encodings are (B, max_length, hidden_size).
        self.context_shape = (tokenizer.max_length, text_encoder.config.hidden_size)
        self.latent_shape = (self.img_height // self.vae_scale_factor,
                             self.img_width // self.vae_scale_factor,
                             unet.config.in_channels)
        self._encode_fn = CompiledFunction(self._encode_graph, [text_encoder], self.jit_compile)
        # One compiled step (and loop) per sampler family: DDIM, and the linear samplers (Euler,
        # DPM-Solver++) that share an update and differ only in their per-step coefficients.
        self._samplers = {name: make_sampler(name, self.scheduler.config) for name in SAMPLERS}
        self._step_fns, self._loop_fns = {}, {}
        for sampler in self._samplers.values():
            family = sampler.family
            if family not in self._step_fns:
                self._step_fns[family] = CompiledFunction(
                    self._make_step_graph(sampler.update), [unet], self.jit_compile)
                self._loop_fns[family] = CompiledFunction(
                    self._make_loop_graph(sampler.update), [unet], self.jit_compile)
        self._decode_fn = CompiledFunction(self._decode_graph, [vae], self.jit_compile)

    # === Constructors ===
    @classmethod
    def from_preset(cls, preset, img_height=None, img_width=None, jit_compile="auto", load_weights=True,
                    dtype="auto", compile_loop=False):
        """A named model (``"sd-v1-5"``, ``"mini-shapes"``, ``"tiny"``); see ``sdlib.presets``.

        ``jit_compile``: True (XLA), False, or "auto". ``dtype`` is a Keras dtype policy
        (``sdlib.validation.DTYPES``): None/"float32", "mixed_bfloat16" or "mixed_float16" (16-bit
        compute, float32 weights), "bfloat16" or "float16" (16-bit weights too: the fast choice for
        inference), or "auto". "auto" (the default) picks the mode measured fastest for this model
        on this device (``sdlib.bench.fastest_mode``): on a CPU, XLA in float32 for the miniature
        models and bfloat16 without XLA for SD v1.5; on a GPU, XLA with 16-bit weights.
        """
        from sdlib import presets

        dtype = validation.check_dtype(dtype)
        validation.check_jit_compile(jit_compile)  # before building: fail in seconds, not minutes
        return presets.build(cls, preset, img_height=img_height, img_width=img_width,
                             jit_compile=jit_compile, load_weights=load_weights, dtype=dtype,
                             compile_loop=compile_loop)

    @classmethod
    def from_pretrained(cls, path_or_repo_id, img_height=512, img_width=512, jit_compile="auto",
                        variant=None, token=None, config_path=None, dtype="auto", compile_loop=False):
        """Load a diffusers folder, a single ``.safetensors`` file, or (with network) a hub repo id.

        ``variant="fp16"`` picks ``*.fp16.safetensors`` files in a folder. A single file needs the
        architecture: the SD v1 one is assumed unless ``config_path`` names a diffusers folder.
        ``jit_compile`` and ``dtype`` as in ``from_preset``.
        """
        from sdlib import checkpoint

        dtype = validation.check_dtype(dtype)
        validation.check_jit_compile(jit_compile)
        parts = checkpoint.load_components(path_or_repo_id, variant=variant, token=token,
                                           config_path=config_path, dtype=dtype)
        return cls(parts["text_encoder"], parts["unet"], parts["vae"], parts["tokenizer"],
                   parts["scheduler"], img_height, img_width, jit_compile=jit_compile,
                   compile_loop=compile_loop, name=str(path_or_repo_id))

    # === Compiled pieces ===
    def _encode_graph(self, token_ids):
        return ops.cast(self.text_encoder(token_ids), "float32")  # (B, 77, D)

    def _make_step_graph(self, update):
        def step(latents, previous_x0, context, timestep, coefficients, guidance_scale):
            """One guided denoising step. ``context`` is [unconditional; conditional], (2B, 77, D);
            ``coefficients[0]`` scales the model input; the rest belong to the sampler's update."""
            batch = ops.shape(latents)[0]
            scaled = latents * coefficients[0]
            model_input = ops.concatenate([scaled, scaled], axis=0)  # (2B, h, w, C)
            timesteps = ops.full((2 * batch,), timestep, dtype="float32")
            compute_dtype = self.unet.compute_dtype
            noise_pred = self.unet(ops.cast(model_input, compute_dtype), timesteps,
                                   ops.cast(context, compute_dtype))
            noise_pred = ops.cast(noise_pred, "float32")  # sampler math stays float32
            uncond, cond = noise_pred[:batch], noise_pred[batch:]
            # diffusers skips guidance when guidance_scale <= 1: the conditional prediction alone.
            guided = ops.where(guidance_scale > 1.0, uncond + guidance_scale * (cond - uncond), cond)
            return update(guided, latents, previous_x0, coefficients)  # (x_next, x0 estimate)

        return step

    def _make_loop_graph(self, update):
        step = self._make_step_graph(update)

        def loop(latents, context, timesteps, coefficients, num_steps, guidance_scale):
            """All ``num_steps`` steps in one program. The schedules are padded to a fixed length
            and ``num_steps`` is a tensor, so another step count reuses the compiled loop."""

            def body(index, carry):
                return step(carry[0], carry[1], context, timesteps[index], coefficients[index],
                            guidance_scale)

            return ops.fori_loop(0, num_steps, body, (latents, ops.zeros_like(latents)))[0]

        return loop

    def _decode_graph(self, latents):
        # StableDiffusionPipeline divides by scaling_factor only (a VAE's shift_factor is for SD3).
        latents = latents / self.vae.config.scaling_factor
        image = self.vae.decode(ops.cast(latents, self.vae.compute_dtype))
        return ops.clip(ops.cast(image, "float32") / 2.0 + 0.5, 0.0, 1.0)  # (B, H, W, 3) in [0, 1]

    # === Public API ===
    def encode_text(self, prompt):
        """Prompt(s) -> text encoding (B, 77, D), float32 numpy."""
        prompts = validation.check_prompt(prompt)
        token_ids = self.tokenizer(prompts)  # (B, 77)
        return to_numpy(self._encode_fn(ops.convert_to_tensor(token_ids, dtype="int32")))

    def text_to_image(self, prompt, negative_prompt=None, batch_size=1, num_steps=50,
                      guidance_scale=7.5, seed=None, diffusion_noise=None, callback=None,
                      verbose=True, sampler="ddim"):
        """Generate images for ``prompt``; returns uint8 numpy (B, H, W, 3).

        A single prompt with ``batch_size=n`` gives n images; a list of n prompts gives one image
        each. ``diffusion_noise`` (B, H/f, W/f, C) fixes the initial latent instead of ``seed``.
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
        ``timestep``, ``latents`` (x_{t-1}) and ``denoised`` (the predicted x_0), numpy NHWC.
        ``sampler``: "ddim" (default, 50 steps), "euler" or "dpmpp_2m" (good in 15-25 steps).
        """
        if sampler not in self._samplers:
            raise ValueError(f"Unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}.")
        context = validation.check_context(context, self.context_shape)
        batch_size = validation.check_generate_batch(batch_size, context)
        if context.shape[0] == 1 and batch_size > 1:
            context = np.repeat(context, batch_size, axis=0)
        num_steps = validation.check_num_steps(num_steps, self.scheduler.config.num_train_timesteps)
        guidance_scale = validation.check_guidance_scale(guidance_scale)
        seed = validation.check_seed(seed)
        if unconditional_context is None:
            negatives = validation.check_negative_prompt(negative_prompt, batch_size)
            unconditional_context = self.encode_text(negatives)
        else:
            unconditional_context = validation.check_context(unconditional_context,
                                                             self.context_shape)
        if unconditional_context.shape[0] == 1 and batch_size > 1:
            unconditional_context = np.repeat(unconditional_context, batch_size, axis=0)
        latents = self._initial_latents(batch_size, seed, diffusion_noise)

        chosen = self._samplers[sampler]
        plan = chosen.plan(num_steps)
        latents = latents * np.float32(plan.init_noise_sigma)
        both_contexts = ops.convert_to_tensor(
            np.concatenate([unconditional_context, context], axis=0), dtype="float32"
        )  # (2B, 77, D)
        guidance = ops.convert_to_tensor(guidance_scale, dtype="float32")
        latents = ops.convert_to_tensor(latents, dtype="float32")
        start = time.perf_counter()
        if self.compile_loop and callback is None:
            latents = self._run_compiled_loop(chosen.family, latents, both_contexts, plan, guidance)
            if verbose:
                seconds = time.perf_counter() - start
                print(f"{num_steps}/{num_steps} denoising steps in one compiled loop: {seconds:.2f} s "
                      f"({1000 * seconds / num_steps:.0f} ms/step)")
        else:
            step_fn = self._step_fns[chosen.family]
            previous_x0 = ops.zeros_like(latents)
            progress = keras.utils.Progbar(num_steps) if verbose else None
            for index, timestep in enumerate(plan.timesteps):
                latents, previous_x0 = step_fn(
                    latents, previous_x0, both_contexts,
                    ops.convert_to_tensor(timestep, dtype="float32"),
                    ops.convert_to_tensor(plan.coefficients[index]), guidance,
                )
                if callback is not None:
                    callback({"step": index, "timestep": _plain_number(timestep),
                              "latents": to_numpy(latents), "denoised": to_numpy(previous_x0)})
                if progress is not None:
                    progress.update(index + 1)
        self.last_denoise_seconds = time.perf_counter() - start
        return self.decode_latents(latents)

    def _run_compiled_loop(self, family, latents, context, plan, guidance):
        length = self.scheduler.config.num_train_timesteps
        num_steps = len(plan.timesteps)
        timesteps = np.zeros(length, np.float32)
        timesteps[:num_steps] = plan.timesteps
        coefficients = np.zeros((length, plan.coefficients.shape[1]), np.float32)
        coefficients[:num_steps] = plan.coefficients
        return self._loop_fns[family](latents, context, ops.convert_to_tensor(timesteps),
                                      ops.convert_to_tensor(coefficients),
                                      ops.convert_to_tensor(num_steps, dtype="int32"), guidance)

    def decode_latents(self, latents):
        """Latents (B, h, w, C) (scaled, as the sampler produces them) -> uint8 images (B, H, W, 3)."""
        images = to_numpy(self._decode_fn(ops.convert_to_tensor(latents, dtype="float32")))
        validation.check_finite_images(images)
        return np.round(images * 255.0).astype(np.uint8)

    def encode_image(self, images):
        """uint8 images (B, H, W, 3) -> scaled latent means (B, H/f, W/f, C), as the sampler uses."""
        x = ops.convert_to_tensor(np.asarray(images, dtype=np.float32) / 127.5 - 1.0)
        mean, _ = self.vae.encode(ops.cast(x, self.vae.compute_dtype))
        return to_numpy(ops.cast(mean, "float32") * self.vae.config.scaling_factor)

    def _initial_latents(self, batch_size, seed, diffusion_noise):
        shape = (batch_size, *self.latent_shape)
        if diffusion_noise is not None:
            return validation.check_diffusion_noise(diffusion_noise, shape, self.vae_scale_factor)
        rng = np.random.default_rng(seed)
        # DDIM's initial noise sigma is 1: the latent is plain standard normal noise.
        return rng.standard_normal(shape, dtype=np.float32)

    @property
    def trace_counts(self):
        """How often each compiled piece was traced (compiled) so far."""
        counts = {"encode": self._encode_fn.trace_count, "decode": self._decode_fn.trace_count}
        for family in self._step_fns:
            suffix = "" if family == "ddim" else f"_{family}"
            counts["step" + suffix] = self._step_fns[family].trace_count
            counts["loop" + suffix] = self._loop_fns[family].trace_count
        return counts

    def __repr__(self):
        return (f"StableDiffusion({self.name!r}, {self.img_height}x{self.img_width}, "
                f"jit_compile={self.jit_compile}, compile_loop={self.compile_loop}, dtype={self.unet.dtype_policy.name!r}, "
                f"backend={keras.backend.backend()!r})")


def _plain_number(value):
    """A timestep for Python code: int where it is whole (DDIM, DPM-Solver), else float (Euler)."""
    value = float(value)
    return int(value) if value.is_integer() else value
