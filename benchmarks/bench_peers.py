r"""sdlib against its peers, keras-cv and diffusers: the same work, in the same run, random weights.

    pip install -r benchmarks/requirements-peers.txt      # peers: benchmarks only, never sdlib's
    python benchmarks/bench_peers.py --size 256                         # text, UNet, VAE: all modes
    python benchmarks/bench_peers.py --size 512 --components unet vae
    python benchmarks/bench_peers.py --size 256 --components pipeline --steps 50

Every row runs in a fresh Python process: import, build (random weights: compute time does not
depend on their values), first call (tracing and compiling included), ``--warmups`` untimed calls
(default 1), then ``--repeats`` timed calls (median, min, max). The work is Stable Diffusion v1.5
at ``--size``:

- ``text``: the text encoder on 2 x 77 tokens (a prompt and the empty prompt);
- ``unet``: one guided denoising step, that is the UNet on a batch of 2 (keras-cv calls it twice
  with batch 1, its own way); sdlib's row is its whole compiled step, sampler update included;
- ``vae``: the VAE decoder on one latent;
- ``pipeline``: ``text_to_image`` of ``--batch-size`` images (default 1) with ``--steps`` steps,
  each library's own call (keras-cv: its DDIM loop, ``--kerascv-steps``; diffusers:
  ``StableDiffusionPipeline`` with DDIM, or with ``--sampler dpmpp_2m`` its
  DPMSolverMultistepScheduler).

Time to an image of equal quality (sampler and steps from ``benchmarks/speed_quality.py``), 512^2,
long rows timed once after the first call. Four LCM steps at guidance 1 (one UNet pass a step; the
speed of an LCM-LoRA's image: the weights are random here) against diffusers' LCMScheduler, and
keras-cv's 50 DDIM steps (its only sampler; its own guidance 7.5):

    python benchmarks/bench_peers.py --size 512 --components pipeline --sampler lcm --steps 4 \
        --guidance 1 --kerascv-steps 50 --warmups 0 --repeats 1 \
        --modes "sdlib:Mixed precision" sdlib:Standard "keras-cv:Mixed precision" \
        "diffusers:eager bfloat16" "diffusers:eager float32"

    python benchmarks/bench_peers.py --size 512 --components pipeline --sampler ddim --steps 8 \
        --diffusers-sampler dpmpp_2m --kerascv-steps 50 --warmups 0 --repeats 1 \
        --modes "sdlib:Mixed precision" sdlib:Standard "keras-cv:Mixed precision" \
        "diffusers:eager bfloat16"

"cold" is import + build + first call. Every library creates the weights of the timed component only
(all three for ``pipeline`` rows). ``--repeats 0`` times the first call only (a cold row).

Cold start as users meet it, the same work for all (``--steps`` DDIM steps, one image), each library
in the modes it offers (sdlib's ``auto`` is what ``from_preset`` / ``from_pretrained`` pick):

    python benchmarks/bench_peers.py --size 512 --components pipeline --steps 5 --repeats 0 \
        --weights random                      # sdlib: from_preset("sd-v1-5", load_weights=False)
    python benchmarks/bench_peers.py ... --weights disk     # each loads its own files from disk

``--weights disk``: sdlib and diffusers ``from_pretrained`` the same fp16 diffusers folder, keras-cv
builds its models and loads its own float32 ``.h5`` files through ``keras.utils.get_file`` with
their SHA-256, as it loads its downloads from the Keras cache (the hash check included). The files
hold random weights, written once (not timed) under ``--checkpoint-dir``.

A matmul peak (4096^2, float32 and bfloat16, TensorFlow and torch) is measured in the same run;
GFLOP/s uses FLOP counts of the diffusers models (``FLOPS`` below). The table gives each row's ratio
to the best peer row of the same component. JSON with device, versions and date goes to the results
archive, ``sdlib/book/results/peers-<size>-<date>.json`` (chapter 6 prints it).
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a photograph of an astronaut riding a horse"

# GFLOP per call, counted with torch.utils.flop_counter.FlopCounterMode on diffusers 0.42.1 /
# transformers 5.24 models with explicit (bmm) attention: matmuls, convolutions and attention at
# 2 FLOP per multiply-add; norms and element-wise work not counted. Keys: (component, latent side).
FLOPS = {
    ("text", None): 26.6,  # 2 x 77 tokens
    ("unet", 32): 360.2, ("unet", 64): 1606.5,  # batch 2
    ("vae", 32): 622.2, ("vae", 64): 2514.5,  # decoder, batch 1
}

# (library, mode) -> how to build it. "mixed" is bfloat16 on CPU (float16 on GPU); sdlib
# keeps its weights in that type too (``sdlib.device.inference_policy``), diffusers'
# bfloat16 row does the same. sdlib's "auto" is its default: the mode measured fastest for
# the model on this device (``sdlib.device.resolve_mode``), recorded in the row.
MODES = {
    "sdlib": {"Standard": (False, "float32"), "Mixed precision": (False, "mixed"),
              "XLA": (True, "float32"), "XLA + mixed precision": (True, "mixed"),
              "auto": ("auto", "auto")},
    "keras-cv": {"Standard": (False, "float32"), "Mixed precision": (False, "mixed"),
                 "XLA": (True, "float32"), "XLA + mixed precision": (True, "mixed")},
    "diffusers": {"eager float32": (False, "float32"), "eager bfloat16": (False, "bfloat16")},
}


# keras-cv's weight files (its names; ``--weights disk`` writes random ones) and sdlib's folder.
KERAS_CV_FILES = {"text_encoder": "kcv_encoder.h5", "diffusion_model": "kcv_diffusion_model.h5",
                  "decoder": "kcv_decoder.h5"}
DIFFUSERS_FOLDER = "sd-v1-5-random-fp16"


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_calls(fn, repeats, warmups=1):
    """``sdlib.book.bench.time_call``, repeated here: the diffusers worker runs in a torch
    environment where sdlib (it imports keras) may not be importable."""
    start = time.perf_counter()
    fn()
    first_s = time.perf_counter() - start
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    if not times:  # a cold row: the first call only
        return {"first_s": first_s, "times": times}
    return {"first_s": first_s, "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "times": times}


# === Workers: one (library, mode, component) each, in its own process ===


def _gpu():
    """``sdlib.device.gpu_visible`` for the keras-cv worker, which must not import sdlib (its
    imports and memory would count as keras-cv's)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def build_sdlib(size, dtype, jit_compile, timed_parts):
    """SD v1.5 built the way a checkpoint is loaded (empty weights, then the values), creating the
    weights of ``timed_parts`` only, as keras-cv and diffusers do for a component; the values here
    are random and filling them is not timed, as keras-cv's and diffusers' weight loading is not.
    -> (pipeline, build seconds)."""
    import sdlib
    from sdlib import presets
    from sdlib.loading import build

    start = time.perf_counter()
    configs = presets.sd15_configs()
    models = build.build_models(configs, dtype=dtype, with_weights=timed_parts)
    components = sdlib.Components(**models,
                                  tokenizer=build.default_tokenizer(configs["text_encoder"]),
                                  scheduler_config=configs["scheduler"])
    pipe = sdlib.StableDiffusion(components, size, size, jit_compile=jit_compile, name="sd-v1-5")
    build_s = time.perf_counter() - start
    for name in timed_parts:  # the seeds of build.random_components
        build.randomize(models[name], seed=build.MODEL_NAMES.index(name))
    return pipe, build_s


def sdlib_guided_step(pipe, rng):
    """sdlib's compiled DDIM step and its inputs: one guided step exactly as
    text_to_image runs it."""
    from keras import ops

    from sdlib.pipeline import Edit, step_coefficients

    latent = ops.convert_to_tensor(rng.standard_normal((1, *pipe.latent_shape)), "float32")
    plan = pipe._samplers["ddim"].plan(50)
    edit = Edit(*(ops.convert_to_tensor(value, "float32") for value in pipe._no_edit(1)))
    inputs = (latent, ops.zeros_like(latent),
              ops.convert_to_tensor(rng.standard_normal((2, 77, 768)), "float32"),  # context
              ops.convert_to_tensor(plan.timesteps[0], "float32"),
              ops.convert_to_tensor(step_coefficients(plan)[0]),
              ops.convert_to_tensor(7.5, "float32"), edit)
    return pipe._step_fns["ddim"], inputs


def run_sdlib(spec):
    start = time.perf_counter()
    import keras
    import numpy as np
    from keras import ops

    import sdlib
    from sdlib import device, presets
    import_s = time.perf_counter() - start
    jit, precision = MODES["sdlib"][spec["mode"]]
    dtype = {"float32": "float32", "mixed": device.inference_policy()}.get(precision, precision)
    resolved = device.resolve_mode(jit, dtype, presets.sd15_configs()["unet"])
    size, component = spec["size"], spec["component"]
    if component == "pipeline":  # what a user calls, build or load timed whole
        start = time.perf_counter()
        if spec.get("weights", "random") == "disk":
            pipe = sdlib.StableDiffusion.from_pretrained(
                str(Path(spec["checkpoint_dir"]) / DIFFUSERS_FOLDER), img_height=size,
                img_width=size, jit_compile=jit, dtype=dtype)
        else:
            pipe = sdlib.StableDiffusion.from_preset("sd-v1-5", size, size, jit_compile=jit,
                                                     dtype=dtype, load_weights=False)
        build_s = time.perf_counter() - start
    else:
        timed_parts = {"text": ["text_encoder"], "unet": ["unet"], "vae": ["vae"]}[component]
        pipe, build_s = build_sdlib(size, resolved.dtype, resolved.jit_compile, timed_parts)
    rng = np.random.default_rng(0)
    if component == "text":
        def call():
            return pipe.encode_text([PROMPT, ""])
    elif component == "unet":
        step_fn, inputs = sdlib_guided_step(pipe, rng)

        def call():
            return keras.ops.convert_to_numpy(step_fn(*inputs)[0])
    elif component == "vae":
        latent = ops.convert_to_tensor(rng.standard_normal((1, *pipe.latent_shape)), "float32")

        def call():
            return keras.ops.convert_to_numpy(pipe._decode_fn(latent))
    else:
        def call():
            return pipe.text_to_image(PROMPT, batch_size=spec.get("batch_size", 1),
                                      num_steps=spec["steps"], sampler=spec["sampler"], seed=0,
                                      guidance_scale=spec.get("guidance", 7.5), verbose=False)
    return {"import_s": import_s, "build_s": build_s,
            **time_calls(call, spec["repeats"], spec.get("warmups", 1)),
            "resolved_mode": {"jit_compile": resolved.jit_compile, "dtype": resolved.dtype},
            "library_version": sdlib.__version__,
            "keras": keras.__version__}


def run_kerascv(spec):
    start = time.perf_counter()
    import keras
    import numpy as np

    jit, precision = MODES["keras-cv"][spec["mode"]]
    if precision == "mixed":
        keras.mixed_precision.set_global_policy("mixed_float16" if _gpu() else "mixed_bfloat16")
    import keras_cv
    from keras_cv.src.models.stable_diffusion import stable_diffusion as sd_module
    from keras_cv.src.models.stable_diffusion.clip_tokenizer import SimpleTokenizer
    from keras_cv.src.models.stable_diffusion.decoder import Decoder
    from keras_cv.src.models.stable_diffusion.diffusion_model import DiffusionModel
    from keras_cv.src.models.stable_diffusion.text_encoder import TextEncoder
    import_s = time.perf_counter() - start
    from_disk = spec.get("weights", "random") == "disk"
    if from_disk:
        folder = Path(spec["checkpoint_dir"]) / "keras-cv"
        hashes = json.loads((folder / "sha256.json").read_text())

    class RandomWeights(keras_cv.models.StableDiffusion):
        """keras-cv's own StableDiffusion, with its models built without downloading weights
        (``--weights disk``: then loaded from local files, as keras-cv loads its downloads)."""

        def _lazy(self, attribute, build):
            """Build on first use and compile with XLA when asked, as keras-cv's properties do."""
            if getattr(self, attribute) is None:
                model = build()
                if from_disk:  # keras-cv's own two lines: get_file (a cached file: its
                    # SHA-256 checked, nothing downloaded), then load_weights
                    name = KERAS_CV_FILES[attribute[1:]]
                    path = keras.utils.get_file(
                        name, origin=f"https://huggingface.co/fchollet/stable-diffusion/{name}",
                        file_hash=hashes[name], cache_dir=str(folder.parent),
                        cache_subdir=folder.name)
                    model.load_weights(path)
                if self.jit_compile:
                    model.compile(jit_compile=True)
                setattr(self, attribute, model)
            return getattr(self, attribute)

        @property
        def text_encoder(self):
            return self._lazy("_text_encoder", lambda: TextEncoder(
                sd_module.MAX_PROMPT_LENGTH, download_weights=False))

        @property
        def diffusion_model(self):
            return self._lazy("_diffusion_model", lambda: DiffusionModel(
                self.img_height, self.img_width, sd_module.MAX_PROMPT_LENGTH,
                download_weights=False))

        @property
        def decoder(self):
            return self._lazy("_decoder", lambda: Decoder(
                self.img_height, self.img_width, download_weights=False))

        @property
        def tokenizer(self):
            if self._tokenizer is None:  # the same BPE file, shipped with sdlib (no download)
                self._tokenizer = SimpleTokenizer(
                    bpe_path=str(REPO_ROOT / "sdlib" / "assets" / "bpe_simple_vocab_16e6.txt.gz"))
            return self._tokenizer

    size = spec["size"]
    start = time.perf_counter()
    model = RandomWeights(img_width=size, img_height=size, jit_compile=jit)
    component = spec["component"]
    built = {"text": lambda: model.text_encoder, "unet": lambda: model.diffusion_model,
             "vae": lambda: model.decoder,
             "pipeline": lambda: (model.text_encoder, model.diffusion_model, model.decoder)}
    built[component]()
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((1, size // 8, size // 8, 4)).astype("float32")
    if component == "text":
        tokens = np.full((1, 77), 49407, "int32")
        positions = np.arange(77, dtype="int32")[None]

        def call():  # keras-cv encodes the prompt and the empty prompt in two calls
            model.text_encoder.predict_on_batch({"tokens": tokens, "positions": positions})
            return model.text_encoder.predict_on_batch({"tokens": tokens, "positions": positions})
    elif component == "unet":
        context = rng.standard_normal((1, 77, 768)).astype("float32")
        embedding = model._get_timestep_embedding(981, 1)

        def call():  # one guided step as keras-cv's generate_image runs it: two batch-1 calls
            inputs = {"latent": latent, "timestep_embedding": embedding, "context": context}
            unconditional = model.diffusion_model.predict_on_batch(inputs)
            conditional = model.diffusion_model.predict_on_batch(inputs)
            return unconditional + 7.5 * (conditional - unconditional)
    elif component == "vae":
        def call():
            return model.decoder.predict_on_batch(latent)
    else:
        def call():  # keras-cv has only its DDIM loop
            return model.text_to_image(PROMPT, batch_size=spec.get("batch_size", 1),
                                       num_steps=spec.get("kerascv_steps", spec["steps"]), seed=0)
    return {"import_s": import_s, "build_s": build_s,
            **time_calls(call, spec["repeats"], spec.get("warmups", 1)),
            "library_version": keras_cv.__version__, "keras": keras.__version__}


def write_kerascv_files(spec):
    """keras-cv's three models with their own random initialisation, saved as its float32
    ``.h5`` files (legacy HDF5, the format of its downloads), with their SHA-256."""
    import hashlib

    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format
    from keras_cv.src.models.stable_diffusion.decoder import Decoder
    from keras_cv.src.models.stable_diffusion.diffusion_model import DiffusionModel
    from keras_cv.src.models.stable_diffusion.text_encoder import TextEncoder

    folder = Path(spec["checkpoint_dir"]) / "keras-cv"
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    size = spec["size"]
    models = {"text_encoder": lambda: TextEncoder(77, download_weights=False),
              "diffusion_model": lambda: DiffusionModel(size, size, 77, download_weights=False),
              "decoder": lambda: Decoder(size, size, download_weights=False)}
    hashes = {}
    for part, build in models.items():
        path = folder / KERAS_CV_FILES[part]
        model = build()
        with h5py.File(path, "w") as handle:
            legacy_h5_format.save_weights_to_hdf5_group(handle, model)
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        hashes[path.name] = digest.hexdigest()
        del model
    (folder / "sha256.json").write_text(json.dumps(hashes, indent=1) + "\n")
    return {"written": sorted(hashes)}


def write_sdlib_folder(spec):
    """SD v1.5 with sdlib's seeded random weights, saved as a float16 diffusers folder (the
    hub's fp16 files): what sdlib and diffusers ``from_pretrained`` in ``--weights disk`` rows."""
    import sdlib

    pipe = sdlib.StableDiffusion.from_preset("sd-v1-5", spec["size"], spec["size"],
                                             jit_compile=False, dtype="float32",
                                             load_weights=False)
    pipe.save_pretrained(Path(spec["checkpoint_dir"]) / DIFFUSERS_FOLDER, dtype="float16")
    return {"written": [DIFFUSERS_FOLDER]}


def ensure_checkpoints(folder, timeout):
    """Write the ``--weights disk`` files once (not timed): each library's own writer."""
    for library, done in (("sdlib files", Path(folder) / DIFFUSERS_FOLDER / "model_index.json"),
                          ("keras-cv files", Path(folder) / "keras-cv" / "sha256.json")):
        if done.exists():
            continue
        print(f"writing {library.split()[0]}'s random checkpoint under {folder} (once, not timed)",
              flush=True)
        result = run_in_subprocess({"library": library, "checkpoint_dir": str(folder),
                                    "size": 512}, sys.executable, timeout)  # as the hub's files
        if "error" in result:
            raise SystemExit(f"could not write {library}: {result['error']}")


def run_diffusers(spec):
    start = time.perf_counter()
    import diffusers
    import torch
    import transformers

    torch.set_num_interop_threads(1)
    import_s = time.perf_counter() - start
    _, precision = MODES["diffusers"][spec["mode"]]
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and dtype == torch.bfloat16:
        dtype = torch.float16
    size, component = spec["size"], spec["component"]
    torch.manual_seed(0)
    start = time.perf_counter()
    configs = json.loads((Path(__file__).parent / "sd15_configs.json").read_text())
    schedulers = {"ddim": diffusers.DDIMScheduler, "lcm": diffusers.LCMScheduler,
                  "dpmpp_2m": diffusers.DPMSolverMultistepScheduler,
                  "euler": diffusers.EulerDiscreteScheduler}
    if component == "pipeline" and spec.get("weights", "random") == "disk":
        # what a Colab user runs: from_pretrained of a local folder (fp16 files, as the hub's)
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            str(Path(spec["checkpoint_dir"]) / DIFFUSERS_FOLDER), torch_dtype=dtype,
            safety_checker=None, requires_safety_checker=False).to(device)
        pipe.scheduler = schedulers[spec["sampler"]].from_config(pipe.scheduler.config)
        build_s = time.perf_counter() - start
        return {"import_s": import_s, "build_s": build_s,
                **_time_diffusers_pipeline(pipe, spec, device, torch),
                "library_version": diffusers.__version__, "torch": torch.__version__}
    parts = {}
    if component in ("text", "pipeline"):
        parts["text_encoder"] = transformers.CLIPTextModel(
            transformers.CLIPTextConfig(**configs["text_encoder"]))
    if component in ("unet", "pipeline"):
        parts["unet"] = diffusers.UNet2DConditionModel(**configs["unet"])
    if component in ("vae", "pipeline"):
        parts["vae"] = diffusers.AutoencoderKL(**configs["vae"])
    for part in parts.values():
        part.to(device=device, dtype=dtype).eval()
    build_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn((1, 4, size // 8, size // 8), generator=generator).to(device, dtype)
    if component == "text":
        tokens = torch.full((2, 77), 49407, dtype=torch.long, device=device)

        def call():
            return parts["text_encoder"](tokens)[0]
    elif component == "unet":
        context = torch.randn((2, 77, 768), generator=generator).to(device, dtype)
        batch = torch.cat([latent, latent])

        def call():
            return parts["unet"](batch, 981, encoder_hidden_states=context).sample
    elif component == "vae":
        def call():
            return parts["vae"].decode(latent).sample
    else:
        tokenizer = transformers.CLIPTokenizer.from_pretrained(
            str(REPO_ROOT / "tests" / "fixtures" / "tiny-sd" / "tokenizer"))  # pads to 77 tokens
        pipe = diffusers.StableDiffusionPipeline(
            scheduler=schedulers[spec["sampler"]].from_config(configs["scheduler"]),
            tokenizer=tokenizer, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False, **parts)
        return {"import_s": import_s, "build_s": build_s,
                **_time_diffusers_pipeline(pipe, spec, device, torch),
                "library_version": diffusers.__version__, "torch": torch.__version__}

    def synced():
        with torch.inference_mode():
            out = call()
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return {"import_s": import_s, "build_s": build_s,
            **time_calls(synced, spec["repeats"], spec.get("warmups", 1)),
            "library_version": diffusers.__version__, "torch": torch.__version__}


def _time_diffusers_pipeline(pipe, spec, device, torch):
    """``StableDiffusionPipeline.__call__`` timed as the other rows are (guidance <= 1: diffusers
    runs no unconditional pass)."""
    pipe.set_progress_bar_config(disable=True)
    size = spec["size"]

    def call():
        with torch.inference_mode():
            images = pipe(PROMPT, num_inference_steps=spec["steps"], height=size, width=size,
                          guidance_scale=spec.get("guidance", 7.5),
                          num_images_per_prompt=spec.get("batch_size", 1),
                          generator=torch.Generator().manual_seed(0), output_type="np").images
        if device == "cuda":
            torch.cuda.synchronize()
        return images

    return time_calls(call, spec["repeats"], spec.get("warmups", 1))


def run_peak(spec):
    """Matmul peak, 4096^2: TensorFlow (oneDNN) or torch, float32 and bfloat16."""
    n = 4096
    rows = {}
    if spec["framework"] == "tensorflow":
        import tensorflow as tf

        xla_matmul = tf.function(tf.linalg.matmul, jit_compile=True)
        for dtype in ("float32", "bfloat16"):
            a = tf.cast(tf.random.normal((n, n), dtype="float32"), dtype)
            timing = time_calls(lambda a=a: tf.linalg.matmul(a, a).numpy(), 3)
            rows[dtype] = 2 * n**3 / timing["median_s"] / 1e9
            timing = time_calls(lambda a=a: xla_matmul(a, a).numpy(), 3)  # reported, not a peak
            rows[f"xla_{dtype}"] = 2 * n**3 / timing["median_s"] / 1e9
    else:
        import torch

        for dtype in (torch.float32, torch.bfloat16):
            a = torch.randn((n, n)).to(dtype)
            timing = time_calls(lambda a=a: torch.mm(a, a), 3)
            rows[str(dtype).replace("torch.", "")] = 2 * n**3 / timing["median_s"] / 1e9
    return {"gflops": rows}


WORKERS = {"sdlib": run_sdlib, "keras-cv": run_kerascv, "diffusers": run_diffusers,
           "peak": run_peak, "keras-cv files": write_kerascv_files,
           "sdlib files": write_sdlib_folder}


def worker_main(spec):
    result = WORKERS[spec["library"]](spec)
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


# === The driver ===


def run_in_subprocess(spec, python, timeout):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1")  # local files only
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    try:
        done = subprocess.run([python, __file__, "--worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout} s"}
    process_s = time.perf_counter() - start
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return {**spec, **json.loads(line[len("RESULT "):]), "process_s": process_s}
    return {**spec, "error": (done.stderr or done.stdout)[-1500:]}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--components", nargs="+", default=["text", "unet", "vae"],
                        choices=["text", "unet", "vae", "pipeline"])
    parser.add_argument("--libraries", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--modes", nargs="+", default=None,
                        help="only these modes: a name above, or library:name for one library")
    parser.add_argument("--steps", type=int, default=50, help="pipeline rows: denoising steps")
    parser.add_argument("--kerascv-steps", type=int, default=None,
                        help="pipeline rows: keras-cv's DDIM steps (default --steps)")
    parser.add_argument("--batch-size", type=int, default=1, help="pipeline rows: images per call")
    parser.add_argument("--warmups", type=int, default=1, help="untimed calls after the first")
    samplers = ["ddim", "euler", "dpmpp_2m", "lcm"]
    parser.add_argument("--sampler", default="ddim", choices=samplers)
    parser.add_argument("--diffusers-sampler", default=None, choices=samplers,
                        help="pipeline rows: diffusers' scheduler (default --sampler)")
    parser.add_argument("--guidance", type=float, default=7.5,
                        help="pipeline rows of sdlib and diffusers: the guidance scale (<= 1: no "
                             "unconditional pass); keras-cv keeps its own 7.5")
    parser.add_argument("--weights", default="random", choices=["random", "disk"],
                        help="pipeline rows: random weights built in memory, or each library "
                             "loading its own files from disk (written once, random)")
    parser.add_argument("--checkpoint-dir", default=str(Path.home() / ".cache" / "sdlib-bench"),
                        help="where --weights disk files live (about 6 GB; default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls after the warm-ups; 0: the first call only (cold)")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="interpreter with torch + diffusers (default: this one)")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--out", default=None,
                        help="JSON path (default: the results archive, sdlib/book/results/)")
    args = parser.parse_args()
    if args.worker:
        return worker_main(json.loads(args.worker))
    if args.weights == "disk":
        if args.components != ["pipeline"]:
            parser.error("--weights disk times whole pipelines: use --components pipeline")
        ensure_checkpoints(args.checkpoint_dir, args.timeout)

    peaks = {}
    for framework, python in (("tensorflow", sys.executable), ("torch", args.torch_python)):
        result = run_in_subprocess({"library": "peak", "framework": framework}, python, 300)
        if "gflops" in result:
            peaks[framework] = result["gflops"]
            print(f"matmul peak ({framework}): "
                  + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in result["gflops"].items()),
                  flush=True)
    rows = []
    for component in args.components:
        for library in args.libraries:
            for mode in MODES[library]:
                if args.modes and not {mode, f"{library}:{mode}"} & set(args.modes):
                    continue
                spec = {"library": library, "mode": mode, "component": component,
                        "size": args.size, "steps": args.steps,
                        "sampler": (args.diffusers_sampler or args.sampler)
                        if library == "diffusers" else args.sampler,
                        "repeats": args.repeats, "warmups": args.warmups,
                        "batch_size": args.batch_size, "guidance": args.guidance,
                        "weights": args.weights, "checkpoint_dir": args.checkpoint_dir,
                        "kerascv_steps": args.kerascv_steps or args.steps}
                python = args.torch_python if library == "diffusers" else sys.executable
                row = run_in_subprocess(spec, python, args.timeout)
                rows.append(row)
                warm = f"warm {row['median_s']:.3f} s, " if "median_s" in row else ""
                status = row.get("error", "").strip().splitlines()[-1:] or [
                    f"{warm}first {row['first_s']:.2f} s, "
                    f"cold {row['import_s'] + row['build_s'] + row['first_s']:.1f} s"]
                print(f"{component:8} {library:9} {mode:22} {status[0]}", flush=True)
    # The orchestrator imports sdlib only here: the workers run in environments that may lack it.
    from sdlib import device
    from sdlib.book import archive

    date = datetime.datetime.now(datetime.timezone.utc)
    record = {"benchmark": "bench_peers", "date": date.isoformat(timespec="seconds"),
              "size": args.size, "device": device.describe().description(),
              "python": platform.python_version(),
              "command": archived_command(sys.argv, args.torch_python), "peaks_gflops": peaks,
              "flops_gflop": {f"{c}@{s}": v for (c, s), v in FLOPS.items()},
              "rows": [{k: v for k, v in row.items() if k != "checkpoint_dir"} for row in rows]}
    print()
    print(archive.format_peers_table(record["rows"], peaks, record["flops_gflop"]))
    out = (archive.write(record, Path(args.out).name, Path(args.out).parent) if args.out else
           archive.write(record, f"peers-{args.size}-{date:%Y-%m-%d}.json"))
    print(f"\nwrote {out}")


def archived_command(argv, torch_python):
    """The command line, without this machine's paths: the torch interpreter becomes
    $TORCH_PYTHON."""
    words = ["$TORCH_PYTHON" if word == torch_python and word != sys.executable else word
             for word in argv]
    return " ".join(["benchmarks/bench_peers.py", *(f'"{word}"' if " " in word else word
                                                     for word in words[1:])])


if __name__ == "__main__":
    main()
