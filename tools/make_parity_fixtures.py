"""Make the tiny random Stable Diffusion v1 checkpoints and golden outputs that sdlib's parity
tests use.

A maintainer's script, run by hand in an environment with torch, diffusers and transformers
(no network):

    refenv/bin/python tools/make_parity_fixtures.py            # writes tests/fixtures/
    refenv/bin/python tools/make_parity_fixtures.py --out DIR  # writes DIR/ instead

It writes, under the output folder:

- `tiny-sd/`: a diffusers StableDiffusionPipeline folder (fp32 files plus `*.fp16.safetensors`
  variants) with the same module types and key patterns as SD v1.5, but 3 UNet levels, a 2-level
  VAE (scale factor 2), a 2-layer CLIP text encoder and a 964-entry CLIP BPE vocabulary (the
  first 450 merges of OpenAI's).
- `tiny-sd.safetensors` / `tiny-sd-bf16.safetensors`: the same weights in the original single-file
  layout (`model.diffusion_model.*`, `first_stage_model.*`,
  `cond_stage_model.transformer.text_model.*`), converted here and checked by loading them back with
  diffusers' `from_single_file`.
- `golden.npz` + `golden.json`: reference outputs of diffusers/transformers in float32 on CPU.

Every parameter is re-randomised with a seeded generator (norm gammas near 1, betas and
biases nonzero), so a swapped gamma/beta or a missing transpose changes the numbers. Two runs
give byte-identical files.
"""

import argparse
import gzip
import io
import json
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
BPE_PATH = REPO_ROOT / "sdlib" / "assets" / "bpe_simple_vocab_16e6.txt.gz"
# All 1,130 tensors of the real SD v1.5 (single-file key, diffusers key, shape),
# to check our key map.
KEYMAP_PATHS = [
    REPO_ROOT / "tests" / "fixtures" / "sd15_keymap.tsv",
    REPO_ROOT.parent / "shared" / "reference" / "sd15_keymap_full.tsv",  # beside a checkout
]
SEED = 20240601
NUM_MERGES = 450
MAX_LENGTH = 77
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

# SD v1.5's scheduler/scheduler_config.json.
SD15_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    clip_sample=False,
    trained_betas=None,
)

TOKENIZER_PROMPTS = [
    "",
    "a photo of an astronaut riding a horse on mars",
    "A Red CIRCLE,   in the TOP-left corner!!! (on black)",
    "it's 1234 o'clock; don't stop... rock &amp; roll",
    "café naïve cafe\u0301 東京 🙂 Ünïcödé",
    "  leading and trailing\twhitespace\nand newlines  ",
    "photo-realistic, 8k, highly detailed, trending on artstation",
    " ".join(f"word{i}" for i in range(40)),  # > 77 tokens: truncated, EOS kept last
]
TEXT_PROMPTS = [TOKENIZER_PROMPTS[1], TOKENIZER_PROMPTS[2]]

PIPELINE_CASES = {
    "a": dict(
        prompt=["a red circle on a black background"], negative_prompt=None, guidance_scale=7.5
    ),
    "b": dict(
        prompt=["a red circle on a black background", "two blue squares"],
        negative_prompt=["blurry", "a green triangle"],
        guidance_scale=7.5,
    ),
    "c": dict(prompt=["a yellow star"], negative_prompt=None, guidance_scale=1.0),
}
PIPELINE_STEPS = 3
PIPELINE_HEIGHT, PIPELINE_WIDTH = 32, 48

DDIM_STEPS = 5
DDIM_DUMMY_MODEL = "model_output = 0.1 * sample + t / 1000  (t: the integer timestep)"
DDIM_CONFIGS = {
    "sd": dict(SD15_SCHEDULER),
    "trailing": dict(SD15_SCHEDULER, timestep_spacing="trailing"),
    "linspace": dict(SD15_SCHEDULER, timestep_spacing="linspace"),
    "alpha_one": dict(SD15_SCHEDULER, set_alpha_to_one=True),
    "v_prediction": dict(SD15_SCHEDULER, prediction_type="v_prediction"),
    # No clip_sample key, so DDIMScheduler's own default (clip_sample=True, range 1.0) applies.
    "no_clip_sample": dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        set_alpha_to_one=False,
    ),
}


def randn(shape, seed):
    """Standard normal float32 tensor from its own generator, so arrays do
    not depend on code order."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


# --------------------------------------------------------------------------------------------------
# Tokenizer: a small but valid CLIP BPE vocabulary.
# --------------------------------------------------------------------------------------------------


def bytes_to_unicode():
    """OpenAI CLIP's reversible byte -> printable unicode table (GPT-2's), in its order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(code) for code in codes], strict=True))


def small_clip_vocab(num_merges):
    """HF's vocab.json order (bytes, bytes + "</w>", merges, specials) cut to the
    first `num_merges` merges."""
    lines = gzip.open(BPE_PATH).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]][:num_merges]
    vocab = list(bytes_to_unicode().values())
    vocab += [token + "</w>" for token in vocab]
    vocab += ["".join(merge) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab)) == len(vocab) == 2 * 256 + num_merges + 2
    return {token: index for index, token in enumerate(vocab)}, merges


def write_vocab_files(folder, vocab, merges):
    folder = Path(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(" ".join(merge) + "\n" for merge in merges)
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")


def build_tokenizer(vocab, merges):
    """CLIPTokenizer from vocab.json + merges.txt as written to disk (from_pretrained would also
    store loader arguments such as `is_local` in the saved tokenizer_config.json)."""
    with tempfile.TemporaryDirectory() as folder:
        write_vocab_files(folder, vocab, merges)
        vocab = json.loads((Path(folder) / "vocab.json").read_text(encoding="utf-8"))
        merge_lines = (Path(folder) / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    merges = [tuple(line.split(" ")) for line in merge_lines]
    return CLIPTokenizer(
        vocab=vocab, merges=merges, model_max_length=MAX_LENGTH, pad_token="<|endoftext|>"
    )


# --------------------------------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------------------------------


def build_pipeline(tokenizer):
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24,
        attention_head_dim=4,  # SD v1 semantics: the number of heads
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=24,
            intermediate_size=48,
            projection_dim=24,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_LENGTH,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # from_config keeps keys PNDM does not take (clip_sample) in its config, as in SD v1.5's file,
    # so that DDIMScheduler.from_config(pipe.scheduler.config) sees clip_sample=False.
    scheduler = PNDMScheduler.from_config(SD15_SCHEDULER)
    generator = torch.Generator().manual_seed(SEED)
    for model in (unet, vae, text_encoder):
        randomise_(model, generator)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@torch.no_grad()
def randomise_(model, generator):
    """Overwrite every parameter: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2),
    norms ~ (1, 0) + N(0, 0.1^2)."""
    touched = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                scale = param[0].numel() ** -0.5 if param_name == "weight" else 0.1
                value = scale * noise
            elif isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                value = 0.1 * noise + (1.0 if param_name == "weight" else 0.0)
            elif isinstance(module, torch.nn.Embedding):
                value = 0.5 * noise
            else:
                raise TypeError(f"no init rule for {type(module).__name__}.{param_name}")
            param.copy_(value)
            touched.add(f"{module_name}.{param_name}" if module_name else param_name)
    assert touched == {name for name, _ in model.named_parameters()}


# --------------------------------------------------------------------------------------------------
# diffusers -> original single-file layout.
# --------------------------------------------------------------------------------------------------

UNET_RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION_NAMES = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
UNET_TOP_LEVEL = {
    "conv_in.": "input_blocks.0.0.",
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}


def rename_first(rest, names):
    for new, old in names.items():
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def unet_original_key(key, config):
    """A diffusers UNet2DConditionModel key -> its `model.diffusion_model.*` name
    (LDM's openaimodel.py)."""
    layers = config.layers_per_block
    for new, old in UNET_TOP_LEVEL.items():
        if key.startswith(new):
            return old + key[len(new) :]
    # Each down level is `layers` (resnet[, attention]) entries then one
    # downsampler; entry 0 is conv_in.
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, index, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = 1 + level * (layers + 1) + index
        if kind == "resnets":
            return f"input_blocks.{block}.0.{rename_first(rest, UNET_RESNET_NAMES)}"
        return f"input_blocks.{block}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (layers + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{rename_first(m[2], UNET_RESNET_NAMES)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    # Each up level is `layers + 1` (resnet[, attention]) entries; the last
    # also holds the upsampler.
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, index, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = level * (layers + 1) + index
        if kind == "resnets":
            return f"output_blocks.{block}.0.{rename_first(rest, UNET_RESNET_NAMES)}"
        return f"output_blocks.{block}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        level = int(m[1])
        has_attention = "CrossAttn" in config.up_block_types[level]
        block = level * (layers + 1) + layers
        return f"output_blocks.{block}.{2 if has_attention else 1}.conv.{m[2]}"
    raise KeyError(f"unmapped UNet key {key}")


def vae_original_key(key, config):
    """A diffusers AutoencoderKL key -> its `first_stage_model.*` name (LDM's
    autoencoder / model.py)."""
    num_levels = len(config.block_out_channels)
    for part in ("encoder", "decoder"):
        if key.startswith(part + ".conv_norm_out."):
            return key.replace(".conv_norm_out.", ".norm_out.", 1)
    if key.startswith(
        ("encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.", "decoder.conv_out.")
    ):
        return key
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        rest = rename_first(m[3], {"conv_shortcut": "nin_shortcut"})
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{rest}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m[1]}.mid.attn_1.{rename_first(m[2], VAE_ATTENTION_NAMES)}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        rest = rename_first(m[3], {"conv_shortcut": "nin_shortcut"})
        return f"encoder.down.{m[1]}.block.{m[2]}.{rest}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    # The decoder's up levels are numbered from the bottom (highest resolution) in
    # LDM, from the top here.
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        rest = rename_first(m[3], {"conv_shortcut": "nin_shortcut"})
        return f"decoder.up.{num_levels - 1 - int(m[1])}.block.{m[2]}.{rest}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{num_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    raise KeyError(f"unmapped VAE key {key}")


def to_single_file(pipe):
    """The pipeline's weights as one SD v1 checkpoint dict, plus
    (single-file key, diffusers key) pairs."""
    state, pairs = {}, []
    for key, tensor in pipe.unet.state_dict().items():
        pairs.append(("model.diffusion_model." + unet_original_key(key, pipe.unet.config), key))
        state[pairs[-1][0]] = tensor
    for key, tensor in pipe.vae.state_dict().items():
        original = vae_original_key(key, pipe.vae.config)
        if ".mid.attn_1." in original and original.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # LDM's AttnBlock uses 1x1 convs
        pairs.append(("first_stage_model." + original, key))
        state[pairs[-1][0]] = tensor
    for key, tensor in pipe.text_encoder.state_dict().items():
        # transformers >= 5.6 flattens CLIPTextModel (no `text_model.`); real
        # SD v1 files keep the prefix.
        pairs.append((CLIP_PREFIX + key.removeprefix("text_model."), key))
        state[pairs[-1][0]] = tensor
    assert len(state) == len(pairs), "two diffusers keys mapped to one single-file key"
    state.update(ldm_extras())
    return {key: tensor.contiguous() for key, tensor in state.items()}, pairs


def ldm_extras():
    """Non-weight tensors that real SD v1 files also carry; a loader must skip them."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return {
        "betas": betas.float(),
        "alphas_cumprod": alphas_cumprod.float(),
        "alphas_cumprod_prev": alphas_cumprod_prev.float(),
        "model_ema.decay": torch.tensor(0.9999, dtype=torch.float32),
        "model_ema.num_updates": torch.tensor(0, dtype=torch.int32),
        CLIP_PREFIX + "embeddings.position_ids": torch.arange(MAX_LENGTH)[None],
    }


INDEX = re.compile(
    r"(?<!in_layers\.)(?<!out_layers\.)(?<!emb_layers\.)(?<!time_embed\.)(?<!model\.out\.)(?<!net\.)(?<!to_out\.)"
    r"\b\d+\b"
)


def check_against_sd15_keymap(state, pairs):
    """Our names must follow the real SD v1.5 ones: the same (single-file, diffusers)
    patterns, digits aside."""
    keymap = next((path for path in KEYMAP_PATHS if path.exists()), None)
    if keymap is None:
        print("  (key-pattern check skipped: no SD v1.5 keymap found)")
        return

    def pattern(text):
        # Collapse level/layer indices; keep the digits that name a layer inside a
        # module (in_layers.0 vs .2).
        return INDEX.sub("#", text)

    reference = {}
    for line in keymap.read_text().splitlines():
        single, diffusers_key, shape = line.split("\t")
        # The keymap drops CLIP's `text_model.` from single-file names; real files and diffusers'
        # detector (`cond_stage_model.transformer.text_model.embeddings.position_embedding.weight`)
        # have it.
        single = single.replace(
            "cond_stage_model.transformer.", "cond_stage_model.transformer.text_model.", 1
        )
        reference[(pattern(single), pattern(diffusers_key))] = len(json.loads(shape))
    ours = {
        (pattern(single), pattern(diffusers_key)): state[single].ndim
        for single, diffusers_key in pairs
    }
    assert set(ours) == set(reference), set(ours) ^ set(reference)
    assert ours == reference, {k: (ours[k], reference[k]) for k in ours if ours[k] != reference[k]}
    print(
        f"  {len(pairs)} keys follow all {len(reference)} key patterns of SD v1.5 (and their ranks)"
    )


# --------------------------------------------------------------------------------------------------
# Saving and verifying.
# --------------------------------------------------------------------------------------------------


def save_folder(pipe, folder, vocab, merges):
    pipe.save_pretrained(folder, safe_serialization=True)
    # transformers 5 writes only tokenizer.json; SD repos (and sdlib's tokenizer) use
    # vocab.json + merges.txt.
    write_vocab_files(folder / "tokenizer", vocab, merges)
    with tempfile.TemporaryDirectory() as scratch:
        # Save the fp16 copy elsewhere and take only its weights, so the fp32
        # configs stay as they are.
        half = StableDiffusionPipeline.from_pretrained(
            folder, torch_dtype=torch.float16, local_files_only=True
        )
        half.save_pretrained(scratch, safe_serialization=True, variant="fp16")
        for path in sorted(Path(scratch).glob("*/*.fp16.safetensors")):
            shutil.copy(path, folder / path.parent.name / path.name)


def state_dicts(pipe):
    return {name: getattr(pipe, name).state_dict() for name in ("unet", "vae", "text_encoder")}


def assert_same_weights(expected, actual, what, cast=None):
    for component in expected:
        want, got = expected[component], actual[component]
        assert set(want) == set(got), f"{what}/{component}: keys differ: {set(want) ^ set(got)}"
        for key in want:
            reference = want[key] if cast is None else want[key].to(cast)
            assert got[key].dtype == reference.dtype, f"{what}/{component}/{key}: {got[key].dtype}"
            assert torch.equal(got[key], reference), f"{what}/{component}/{key} differs"
    count = sum(len(weights) for weights in expected.values())
    print(f"  {what}: all {count} tensors equal")


def configs_only(folder, scratch):
    """The folder without weights: diffusers' from_single_file silently takes a component's
    weights from `config=` when it does not recognise that component in the checkpoint, which
    would hide a bad key map."""
    shutil.copytree(
        folder, scratch, ignore=shutil.ignore_patterns("*.safetensors"), dirs_exist_ok=True
    )
    return scratch


def load_single_file(path, config, dtype=torch.float32):
    return StableDiffusionPipeline.from_single_file(
        str(path),
        config=str(config),
        local_files_only=True,
        torch_dtype=dtype,
        safety_checker=None,
        requires_safety_checker=False,
    )


def verify(folder, single_fp32, single_bf16, expected, pairs):
    """Load every file back with diffusers (offline, local configs only)
    and compare every tensor."""
    fp32 = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    assert_same_weights(expected, state_dicts(fp32), "folder (fp32)")
    fp16 = StableDiffusionPipeline.from_pretrained(
        folder, variant="fp16", torch_dtype=torch.float16, local_files_only=True
    )
    assert_same_weights(expected, state_dicts(fp16), "folder variant fp16", cast=torch.float16)
    with tempfile.TemporaryDirectory() as scratch:
        config = configs_only(folder, Path(scratch) / "config")
        single = load_single_file(single_fp32, config)
        assert_same_weights(expected, state_dicts(single), "from_single_file(tiny-sd.safetensors)")
        single = load_single_file(single_bf16, config, torch.bfloat16)
        assert_same_weights(
            expected,
            state_dicts(single),
            "from_single_file(tiny-sd-bf16.safetensors)",
            torch.bfloat16,
        )
        # transformers' CLIPTextModel has no from_single_file of its own; the pipeline's covered it.
        for name in ("unet", "vae"):
            cls = type(getattr(fp32, name))
            model = cls.from_single_file(
                str(single_fp32), config=str(config), subfolder=name, local_files_only=True
            )
            assert_same_weights(
                {name: expected[name]},
                {name: model.state_dict()},
                f"{cls.__name__}.from_single_file",
            )
        # Negative control: a changed tensor in each component's part of the file
        # must show up after loading.
        state = load_file(single_fp32)
        probes = {}
        for prefix, component in (
            ("model.", "unet"),
            ("first_stage", "vae"),
            ("cond_stage", "text_encoder"),
        ):
            single_key, diffusers_key = next(pair for pair in pairs if pair[0].startswith(prefix))
            state[single_key] = state[single_key] + 1.0
            probes[component] = diffusers_key
        save_file(state, Path(scratch) / "perturbed.safetensors")
        perturbed = state_dicts(load_single_file(Path(scratch) / "perturbed.safetensors", config))
        for component, key in probes.items():
            assert torch.equal(perturbed[component][key], expected[component][key] + 1.0), (
                component,
                key,
            )
        print(f"  negative control: a +1 on {', '.join(probes.values())} comes through")
    return fp32


# --------------------------------------------------------------------------------------------------
# Golden outputs.
# --------------------------------------------------------------------------------------------------


def assert_lively(name, array, low=0.05, high=20.0):
    """Random weights must give O(1) activations: not vanishing, not exploding, not mostly zero."""
    std = float(array.std())
    zero_fraction = float((np.abs(array) < 1e-6).mean())
    print(
        f"  {name:28s} {str(array.shape):18s} std {std:7.3f}  "
        f"max|x| {float(np.abs(array).max()):7.3f}"
    )
    assert low < std < high and zero_fraction < 0.01, (name, std, zero_fraction)


@torch.no_grad()
def golden_models(pipe, arrays, meta):
    tokenizer, text_encoder, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae

    def tokenize(prompts):
        ids = tokenizer(
            prompts,
            padding="max_length",
            max_length=MAX_LENGTH,
            truncation=True,
            return_tensors="pt",
        )
        return ids.input_ids

    arrays["tok_ids"] = tokenize(TOKENIZER_PROMPTS).numpy()
    meta["tok_prompts"] = TOKENIZER_PROMPTS
    meta["tokenizer"] = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        model_max_length=MAX_LENGTH,
        call="tokenizer(prompts, padding='max_length', max_length=77, truncation=True)",
    )

    text_ids = tokenize(TEXT_PROMPTS)
    arrays["text_ids"] = text_ids.numpy()
    arrays["text_hidden"] = text_encoder(text_ids).last_hidden_state.numpy()
    meta["text"] = dict(prompts=TEXT_PROMPTS, call="text_encoder(text_ids).last_hidden_state")

    sample = randn((2, 4, 16, 24), seed=1)  # (B, C, H, W), non-square
    timesteps = torch.tensor([999, 10])
    context = randn((2, MAX_LENGTH, 24), seed=2)
    arrays["unet_sample"] = sample.numpy()
    arrays["unet_timesteps"] = timesteps.numpy()
    arrays["unet_context"] = context.numpy()
    time_proj = unet.time_proj(timesteps)  # (B, 16) sinusoidal
    arrays["unet_time_proj"] = time_proj.numpy()
    arrays["unet_time_emb"] = unet.time_embedding(time_proj).numpy()  # (B, 64)
    arrays["unet_out"] = unet(sample, timesteps, encoder_hidden_states=context).sample.numpy()
    # Odd latent sizes (18x22: 9x11 -> 5x6 at the bottom): the upsampler must match the skip's
    # size instead of doubling (diffusers passes upsample_size). Real SD hits this at 520x520.
    odd_sample = randn((1, 4, 18, 22), seed=5)
    arrays["unet_odd_sample"] = odd_sample.numpy()
    arrays["unet_odd_out"] = unet(
        odd_sample, timesteps[:1], encoder_hidden_states=context[:1]
    ).sample.numpy()
    meta["unet"] = dict(
        call="unet(unet_sample, unet_timesteps, encoder_hidden_states=unet_context).sample",
        odd=(
            "unet(unet_odd_sample, unet_timesteps[:1], "
            "encoder_hidden_states=unet_context[:1]).sample"
        ),
    )

    image = 2.0 * torch.rand((1, 3, 32, 48), generator=torch.Generator().manual_seed(3)) - 1.0
    posterior = vae.encode(image).latent_dist
    latent = randn((1, 4, 16, 24), seed=4)
    arrays["vae_image"] = image.numpy()
    arrays["vae_mean"] = posterior.mean.numpy()
    arrays["vae_logvar"] = posterior.logvar.numpy()
    arrays["vae_latent"] = latent.numpy()
    arrays["vae_decoded"] = vae.decode(latent).sample.numpy()
    meta["vae"] = dict(
        encode="vae.encode(vae_image).latent_dist -> .mean, .logvar (logvar clamped to [-30, 20])",
        decode="vae.decode(vae_latent).sample (raw: no division by scaling_factor, no clipping)",
        scale_factor=2 ** (len(vae.config.block_out_channels) - 1),
        scaling_factor=vae.config.scaling_factor,
    )

    lively = [
        "text_hidden", "unet_time_emb", "unet_out", "unet_odd_out", "vae_mean", "vae_logvar",
        "vae_decoded",
    ]
    for name in lively:
        assert_lively(name, arrays[name])


def golden_ddim(pipe, arrays, meta):
    ddim = DDIMScheduler.from_config(pipe.scheduler.config)
    for num_steps in (50, 3):
        ddim.set_timesteps(num_steps)
        arrays[f"ddim_timesteps_{num_steps}"] = ddim.timesteps.numpy()

    sample0 = randn((1, 4, 8, 8), seed=5)
    arrays["ddim_sample"] = sample0.numpy()
    configs = {}
    for name, config in DDIM_CONFIGS.items():
        scheduler = DDIMScheduler.from_config(config)
        scheduler.set_timesteps(DDIM_STEPS)
        sample, prev_samples, pred_originals = sample0.clone(), [], []
        for t in scheduler.timesteps:
            model_output = 0.1 * sample + int(t) / 1000
            out = scheduler.step(model_output, t, sample, eta=0.0)
            prev_samples.append(out.prev_sample)
            pred_originals.append(out.pred_original_sample)
            sample = out.prev_sample
        arrays[f"ddim_{name}_timesteps"] = scheduler.timesteps.numpy()
        # (steps, 1, 4, 8, 8) each
        arrays[f"ddim_{name}_prev_sample"] = torch.stack(prev_samples).numpy()
        arrays[f"ddim_{name}_pred_original_sample"] = torch.stack(pred_originals).numpy()
        resolved = {
            key: value for key, value in scheduler.config.items() if not key.startswith("_")
        }
        configs[name] = dict(given=config, resolved=resolved)
    meta["ddim"] = dict(
        timesteps_50_and_3="DDIMScheduler.from_config(tiny-sd/scheduler).set_timesteps(n)",
        num_inference_steps=DDIM_STEPS,
        eta=0.0,
        dummy_model=DDIM_DUMMY_MODEL,
        loop=(
            "for t in timesteps: out = step(dummy(sample, t), t, sample, eta=0); "
            "sample = out.prev_sample"
        ),
        configs=configs,
    )


SAMPLER_CLASSES = {"euler": "EulerDiscreteScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler"}
SAMPLER_STEPS = (5, 12)
SAMPLER_PIPELINE_STEPS = 4


@torch.no_grad()
def golden_samplers(pipe, arrays, meta):
    """Euler and DPM-Solver++(2M) from the pipeline's scheduler config, with the DDIM dummy model
    applied to the *scaled* model input: model_output = 0.1 * scale_model_input(x, t) + t / 1000."""
    import diffusers

    sample0 = torch.from_numpy(arrays["ddim_sample"])
    info = {}
    for name, class_name in SAMPLER_CLASSES.items():
        cls = getattr(diffusers, class_name)
        for steps in SAMPLER_STEPS:
            scheduler = cls.from_config(pipe.scheduler.config)
            scheduler.set_timesteps(steps)
            sample = sample0 * scheduler.init_noise_sigma
            outputs = []
            for t in scheduler.timesteps:
                model_input = scheduler.scale_model_input(sample, t)
                model_output = 0.1 * model_input + float(t) / 1000
                sample = scheduler.step(model_output, t, sample).prev_sample
                outputs.append(sample)
            key = f"{name}_{steps}"
            arrays[f"{key}_timesteps"] = scheduler.timesteps.numpy().astype(np.float32)
            arrays[f"{key}_sigmas"] = np.asarray(scheduler.sigmas, dtype=np.float32)
            arrays[f"{key}_prev_sample"] = torch.stack(outputs).numpy()
            info[key] = dict(init_noise_sigma=float(scheduler.init_noise_sigma),
                             resolved={k: v for k, v in scheduler.config.items()
                                       if not k.startswith("_")})
        # The whole pipeline with this sampler: case "a"'s prompt and noise, 4 steps.
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
        spec = PIPELINE_CASES["a"]
        noise = torch.from_numpy(arrays["pipe_a_noise"])
        images = pipe(spec["prompt"], negative_prompt=spec["negative_prompt"],
                      num_inference_steps=SAMPLER_PIPELINE_STEPS,
                      guidance_scale=spec["guidance_scale"], latents=noise,
                      height=PIPELINE_HEIGHT, width=PIPELINE_WIDTH, output_type="np").images
        arrays[f"pipe_{name}_images"] = images.astype(np.float32)
    meta["samplers"] = dict(
        classes=SAMPLER_CLASSES, steps=list(SAMPLER_STEPS), runs=info,
        dummy_model="model_output = 0.1 * scheduler.scale_model_input(sample, t) + t / 1000",
        start="ddim_sample * init_noise_sigma",
        pipeline=(
            f"case a (prompt, noise, guidance) with {SAMPLER_PIPELINE_STEPS} steps: "
            "pipe_<sampler>_images"
        ),
    )


def run_pipeline(pipe, spec, noise):
    """diffusers' StableDiffusionPipeline on given noise; also returns the
    latents before the VAE."""
    final = {}

    def keep_latents(pipeline, step, timestep, tensors):
        final["latents"] = tensors["latents"]
        return tensors

    images = pipe(
        spec["prompt"],
        negative_prompt=spec["negative_prompt"],
        num_inference_steps=PIPELINE_STEPS,
        guidance_scale=spec["guidance_scale"],
        latents=noise,
        height=PIPELINE_HEIGHT,
        width=PIPELINE_WIDTH,
        output_type="np",
        callback_on_step_end=keep_latents,
        callback_on_step_end_tensor_inputs=["latents"],
    ).images
    return images, final["latents"]


@torch.no_grad()
def golden_pipeline(pipe, arrays, meta):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    cases = {}
    for seed, (case, spec) in enumerate(PIPELINE_CASES.items(), start=10):
        factor = pipe.vae_scale_factor  # 2 for this VAE, 8 for SD's
        noise = randn(
            (len(spec["prompt"]), 4, PIPELINE_HEIGHT // factor, PIPELINE_WIDTH // factor), seed
        )
        images, latents = run_pipeline(pipe, spec, noise)
        arrays[f"pipe_{case}_noise"] = noise.numpy()
        arrays[f"pipe_{case}_latents"] = latents.numpy()
        arrays[f"pipe_{case}_images"] = images.astype(np.float32)
        arrays[f"pipe_{case}_images_uint8"] = (images * 255).round().astype(np.uint8)
        saturated = float(((images == 0.0) | (images == 1.0)).mean())
        print(
            f"  pipe_{case}_images {images.shape} mean {images.mean():.3f}, "
            f"{saturated:.0%} clipped to 0 or 1"
        )
        assert saturated < 0.5 and images.std() > 0.02
        cases[case] = dict(
            spec,
            num_inference_steps=PIPELINE_STEPS,
            height=PIPELINE_HEIGHT,
            width=PIPELINE_WIDTH,
            guidance_applied=spec["guidance_scale"] > 1.0,
        )
    meta["pipeline"] = dict(
        scheduler="DDIMScheduler.from_config(tiny-sd/scheduler/scheduler_config.json), eta 0",
        call=(
            "pipe(prompt, negative_prompt=..., num_inference_steps=3, guidance_scale=..., "
            "latents=pipe_X_noise, height=32, width=48, output_type='np').images"
        ),
        latents=(
            "pipe_X_latents: the latents after the last scheduler step, "
            "before vae.decode(latents / 0.18215)"
        ),
        images_uint8="(images * 255).round().astype(uint8)",
        cases=cases,
    )


def save_npz(path, arrays):
    """np.savez with fixed zip timestamps, so reruns are byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def print_sizes(out):
    files = sorted(path for path in out.rglob("*") if path.is_file())
    for path in files:
        print(f"  {path.stat().st_size:>10,d}  {path.relative_to(out)}")
    print(f"  {sum(path.stat().st_size for path in files):>10,d}  total")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "fixtures")
    args = parser.parse_args()
    out = args.out
    folder = out / "tiny-sd"
    single_fp32, single_bf16 = out / "tiny-sd.safetensors", out / "tiny-sd-bf16.safetensors"

    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # one fixed reduction order
    torch.use_deterministic_algorithms(True)

    print("building the tiny pipeline")
    vocab, merges = small_clip_vocab(NUM_MERGES)
    pipe = build_pipeline(build_tokenizer(vocab, merges))
    expected = {
        name: {k: v.clone() for k, v in weights.items()}
        for name, weights in state_dicts(pipe).items()
    }

    print(f"writing {folder}")
    shutil.rmtree(folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    save_folder(pipe, folder, vocab, merges)

    print(f"writing {single_fp32.name} and {single_bf16.name}")
    state, pairs = to_single_file(pipe)
    check_against_sd15_keymap(state, pairs)
    save_file(state, single_fp32)
    save_file(
        {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()},
        single_bf16,
    )
    assert all(torch.equal(v, load_file(single_fp32)[k]) for k, v in state.items())

    print("verifying every file by loading it back with diffusers")
    pipe = verify(folder, single_fp32, single_bf16, expected, pairs)
    # The folder's vocab.json + merges.txt (what sdlib reads) must tokenize like its tokenizer.json.
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(folder / "tokenizer", scratch, dirs_exist_ok=True)
        (Path(scratch) / "tokenizer.json").unlink()
        from_vocab = CLIPTokenizer.from_pretrained(scratch)
        assert (
            from_vocab(TOKENIZER_PROMPTS).input_ids == pipe.tokenizer(TOKENIZER_PROMPTS).input_ids
        )

    print("computing golden outputs (float32, CPU)")
    arrays = {}
    meta = dict(
        made_by="tools/make_parity_fixtures.py",
        versions=dict(
            torch=torch.__version__,
            diffusers=diffusers.__version__,
            transformers=transformers.__version__,
        ),
        layout="NCHW where diffusers uses NCHW (pipe_*_images are NHWC, as diffusers returns them)",
    )
    golden_models(pipe, arrays, meta)
    golden_ddim(pipe, arrays, meta)
    golden_pipeline(pipe, arrays, meta)
    golden_samplers(pipe, arrays, meta)
    for name, array in arrays.items():
        if np.issubdtype(array.dtype, np.floating):
            assert array.dtype == np.float32, name
    meta["arrays"] = {
        name: dict(shape=list(array.shape), dtype=str(array.dtype))
        for name, array in arrays.items()
    }
    save_npz(out / "golden.npz", arrays)
    (out / "golden.json").write_text(
        json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )

    print(f"files under {out}")
    print_sizes(out)


if __name__ == "__main__":
    main()
