"""Make the LoRA and textual-inversion files, and diffusers' golden outputs for them, that sdlib's
adapter tests use.

A maintainer's script, run by hand in an environment with torch, diffusers, transformers and peft
(as for ``tools/make_parity_fixtures.py``, which must have written ``tests/fixtures/tiny-sd/``):

    refenv/bin/python tools/make_adapter_fixtures.py            # writes into tests/fixtures/
    refenv/bin/python tools/make_adapter_fixtures.py --out DIR  # reads DIR/tiny-sd, writes DIR/

It writes, under the output folder:

- ``lora_peft_a.safetensors``: adapter "a" for tiny-sd's UNet and text encoder, in the format
  diffusers' ``StableDiffusionPipeline.save_lora_weights`` writes (``unet.<module>.lora_A.weight``,
  ``text_encoder.<module>.lora_B.weight``, with the peft ``LoraConfig`` of each model in the
  ``lora_adapter_metadata`` entry of the safetensors header): rank 4, alpha 8 in the UNet (conv2:
  rank 2, alpha 3, from ``rank_pattern`` / ``alpha_pattern``), rank 4, alpha 2 in the text encoder;
  linear, 1x1-conv and 3x3-conv LoRA layers;
- ``lora_kohya_a.safetensors``: the same adapter in kohya-ss / A1111 format (``lora_unet_*`` and
  ``lora_te_text_model_*`` names, ``lora_down`` / ``lora_up`` / ``alpha``), float16;
- ``lora_peft_b.safetensors``: adapter "b", UNet only, rank 2, without the metadata entry (so a
  reader must take alpha = rank);
- ``ti_cat_toy.safetensors`` (diffusers format, one vector) and ``ti_style.safetensors`` (A1111
  format ``emb_params``, three vectors): textual-inversion embeddings;
- ``adapters_golden.npz`` + ``adapters_golden.json``: diffusers' images and prompt embeddings with
  these adapters loaded, switched, fused, unloaded, and the token ids of prompts that use the
  embeddings.

The LoRA layers are made with peft (``LoraConfig``) and every A and B matrix is then redrawn from a
seeded generator (peft starts B at zero), so every adapter visibly changes the images. Before it
writes the goldens the script loads each file back with diffusers and checks what diffusers made of
it (weights, alpha / rank per module, and that fusing adds ``scale * alpha / rank * up @ down`` to
every weight). Two runs give byte-identical files.
"""

import argparse
import json
import struct
import sys
from pathlib import Path

import diffusers
import numpy as np
import peft
import safetensors
import torch
import transformers
from diffusers import DDIMScheduler, StableDiffusionPipeline
from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from make_parity_fixtures import (  # noqa: E402  (the same tiny models, the same conventions)
    MAX_LENGTH,
    PIPELINE_HEIGHT,
    PIPELINE_STEPS,
    PIPELINE_WIDTH,
    SEED,
    assert_lively,
    print_sizes,
    randn,
    run_pipeline,
    save_npz,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

FILES = dict(
    peft_a="lora_peft_a.safetensors",
    kohya_a="lora_kohya_a.safetensors",
    peft_b="lora_peft_b.safetensors",
    ti_cat_toy="ti_cat_toy.safetensors",
    ti_style="ti_style.safetensors",
)

# Adapter "a" has every LoRA-able kind of UNet layer, in a few blocks only, so that the files stay
# small: two attention blocks (down and up, 16 channels) and two resnets (the mid block's, 32
# channels, and up level 2's last, whose conv1 takes 16 + 16 skip channels); and every linear layer
# of the text encoder. The names go to peft as they are (a target matches a module name or its
# tail), and the metadata lists them.
ATTENTION_LAYERS = [
    "proj_in",  # SD v1: 1x1 convs, so 4-D LoRA tensors
    "proj_out",
    "transformer_blocks.0.attn1.to_q",
    "transformer_blocks.0.attn1.to_k",
    "transformer_blocks.0.attn1.to_v",
    "transformer_blocks.0.attn1.to_out.0",
    "transformer_blocks.0.attn2.to_q",
    "transformer_blocks.0.attn2.to_k",  # input: the 24-wide text embedding
    "transformer_blocks.0.attn2.to_v",
    "transformer_blocks.0.attn2.to_out.0",
    "transformer_blocks.0.ff.net.0.proj",  # GEGLU: 2 x the inner width out
    "transformer_blocks.0.ff.net.2",
]
RESNET_LAYERS = ["conv1", "conv2", "time_emb_proj"]  # 3x3 convs and the time-embedding linear
A_ATTENTIONS = ["down_blocks.0.attentions.1", "up_blocks.2.attentions.2"]
A_RESNETS = ["mid_block.resnets.0", "up_blocks.2.resnets.2"]
ADAPTER_A = dict(
    unet=dict(
        r=4,
        lora_alpha=8,
        target_modules=sorted(
            [f"{block}.{layer}" for block in A_ATTENTIONS for layer in ATTENTION_LAYERS]
            + [f"{block}.{layer}" for block in A_RESNETS for layer in RESNET_LAYERS]
        ),
        rank_pattern={"conv2": 2},
        alpha_pattern={"conv2": 3},
    ),
    text_encoder=dict(
        r=4,
        lora_alpha=2,
        target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    ),
)
# Adapter "b": attn2's to_k / to_v and proj_out in the block that "a" also changes (two adapters on
# one layer) and in the mid block (which "a" leaves alone). No metadata in its file, so its alpha
# is the rank, as diffusers and kohya-less readers take it.
B_ATTENTIONS = ["down_blocks.0.attentions.1", "mid_block.attentions.0"]
B_LAYERS = ["transformer_blocks.0.attn2.to_k", "transformer_blocks.0.attn2.to_v", "proj_out"]
ADAPTER_B = dict(
    unet=dict(
        r=2,
        lora_alpha=2,
        target_modules=sorted(f"{block}.{layer}" for block in B_ATTENTIONS for layer in B_LAYERS),
    ),
)
# Redrawn LoRA weights: down (lora_A) ~ N(0, 1 / fan_in), up (lora_B) ~ N(0, gain^2 / rank), so
# up @ down @ x is about gain * |x|; times alpha / rank (2 in a's UNet, 1.5 in its conv2s, 0.5 in
# its text encoder, 1 in b) and the adapter weight, that is a clear but O(1) change of each layer.
LORA_GAINS = {("a", "unet"): 0.15, ("a", "text_encoder"): 0.6, ("b", "unet"): 0.5}
LORA_SEEDS = {
    ("a", "unet"): SEED + 101, ("a", "text_encoder"): SEED + 102, ("b", "unet"): SEED + 103
}

TI_VECTORS = {"<cat-toy>": 1, "<style>": 3}  # token -> vectors; "<style>" comes from emb_params
TI_SEEDS = {"<cat-toy>": 201, "<style>": 202}
TI_SCALE = 0.5  # like tiny-sd's token embeddings, N(0, 0.5^2)

PROMPT = "a red circle on a black background"
NEGATIVE = "blurry"
TI_PROMPT = "a <cat-toy> in <style> style"
TI_NEGATIVE = "<cat-toy>"
TI_TOKEN_PROMPTS = [
    TI_PROMPT,
    TI_NEGATIVE,  # alone
    "<cat-toy> at the start",
    "at the end <style>",
    "<cat-toy> and <cat-toy>, then <style> <style>",  # each twice
    "<cat-toy>, <style>!",  # glued to punctuation
    "a<cat-toy>b x<style>y",  # glued to letters
    "<Cat-Toy> or <STYLE> in capitals",
]
GUIDANCE = 7.5
NOISE_SEED = 300  # one noise for every LoRA case, so that their differences are the adapters'
TI_NOISE_SEED = 301

# case -> what is loaded and how it is switched (diffusers calls in CALLS); all cases run
# `run_pipeline` (make_parity_fixtures): DDIM, PIPELINE_STEPS steps, 32 x 48, guidance 7.5.
CASES = {
    "base": "no adapter",
    "peft_a": "lora_peft_a as 'a', set_adapters(['a'], [0.7])",
    "peft_a_fused": "lora_peft_a as 'a', fuse_lora(lora_scale=0.7)",
    "kohya_a": "lora_kohya_a as 'a_kohya', set_adapters(['a_kohya'], [0.7])",
    "stacked": "peft_a's pipe, then lora_peft_b as 'b', set_adapters(['a', 'b'], [0.5, 1.0])",
    "only_b": "stacked's pipe, set_adapters(['b'], [1.0]) ('a' stays loaded, switched off)",
    "unloaded": "only_b's pipe, unload_lora_weights()",
    "ti": "ti_cat_toy, then ti_style with token='<style>'",
}
CALLS = {
    "pipe": (
        "StableDiffusionPipeline.from_pretrained(tiny-sd, safety_checker=None, "
        "local_files_only=True); pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)"
        " -- a fresh pipe for base, peft_a (then stacked, only_b, unloaded), peft_a_fused, "
        "kohya_a and ti"
    ),
    "base": "(nothing)",
    "peft_a": (
        "pipe.load_lora_weights('lora_peft_a.safetensors', adapter_name='a', "
        "local_files_only=True); pipe.set_adapters(['a'], [0.7])"
    ),
    "peft_a_fused": (
        "pipe.load_lora_weights('lora_peft_a.safetensors', adapter_name='a', "
        "local_files_only=True); pipe.fuse_lora(lora_scale=0.7)"
    ),
    "kohya_a": (
        "pipe.load_lora_weights('lora_kohya_a.safetensors', adapter_name='a_kohya', "
        "local_files_only=True); pipe.set_adapters(['a_kohya'], [0.7])"
    ),
    "stacked": (
        "(peft_a's pipe) pipe.load_lora_weights('lora_peft_b.safetensors', adapter_name='b', "
        "local_files_only=True); pipe.set_adapters(['a', 'b'], [0.5, 1.0])"
    ),
    "only_b": "(stacked's pipe) pipe.set_adapters(['b'], [1.0])",
    "unloaded": "(only_b's pipe) pipe.unload_lora_weights()",
    "ti": (
        "pipe.load_textual_inversion('ti_cat_toy.safetensors', local_files_only=True); "
        "pipe.load_textual_inversion('ti_style.safetensors', token='<style>', "
        "local_files_only=True)"
    ),
    "images": (
        "pipe(prompt, negative_prompt=negative_prompt, num_inference_steps=3, guidance_scale=7.5, "
        "latents=<case>_noise, height=32, width=48, output_type='np').images"
    ),
    "prompt_embeds": (
        "pipe.encode_prompt(prompt, 'cpu', num_images_per_prompt=1, "
        "do_classifier_free_guidance=True, negative_prompt=negative_prompt) -> "
        "(<case>_prompt_embeds, <case>_negative_prompt_embeds)"
    ),
    "ti_tok_ids": (
        "pipe.tokenizer(pipe.maybe_convert_prompt(prompt, pipe.tokenizer), padding='max_length', "
        "max_length=77, truncation=True).input_ids, after both embeddings are loaded"
    ),
}


# --------------------------------------------------------------------------------------------------
# Making the files.
# --------------------------------------------------------------------------------------------------


def load_pipe(out):
    pipe = StableDiffusionPipeline.from_pretrained(
        out / "tiny-sd", safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def json_ready(config):
    """A LoraConfig as a dict that json takes and that is the same on every run (peft keeps
    target_modules as a set, whose order depends on string hashing)."""
    return {
        key: sorted(value) if isinstance(value, (set, frozenset)) else value
        for key, value in config.to_dict().items()
    }


@torch.no_grad()
def make_lora(pipe, name, spec):
    """Inject adapter `name` with peft, redraw all its weights; returns per model the state dict
    (peft names, as get_peft_model_state_dict gives them), the json-ready config, and each module's
    (rank, alpha) as peft set them up."""
    made = {}
    for component, config in spec.items():
        model = getattr(pipe, component)
        lora_config = LoraConfig(**config)
        if component == "unet":
            model.add_adapter(lora_config, adapter_name=name)
        else:
            # transformers' own add_adapter wants peft >= 0.22, which does not exist (yet); it is a
            # thin wrapper around this call. (Its load_adapter, which diffusers uses, has no check.)
            inject_adapter_in_model(lora_config, model, adapter_name=name)
        state = get_peft_model_state_dict(model, adapter_name=name)
        generator = torch.Generator().manual_seed(LORA_SEEDS[(name, component)])
        gain = LORA_GAINS[(name, component)]
        redrawn = {}
        for key, tensor in state.items():
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            if ".lora_A." in key:  # (rank, in[, kh, kw])
                redrawn[key] = noise * tensor[0].numel() ** -0.5
            else:  # (out, rank[, 1, 1])
                redrawn[key] = noise * gain / tensor.shape[1] ** 0.5
        ranks = {
            module_name: (layer.r[name], layer.lora_alpha[name])
            for module_name, layer in model.named_modules()
            if isinstance(layer, LoraLayer) and name in layer.r
        }
        made[component] = dict(
            state=redrawn, config=json_ready(model.peft_config[name]), ranks=ranks
        )
        assert {key.rsplit(".lora_", 1)[0] for key in redrawn} == set(ranks)
    return made


def save_peft(out, filename, made, with_metadata):
    """Through diffusers' own writer, as its training scripts do."""
    metadata = {}
    if with_metadata:
        metadata = {f"{component}_lora_adapter_metadata": made[component]["config"]
                    for component in made}
    StableDiffusionPipeline.save_lora_weights(
        out,
        weight_name=filename,
        unet_lora_layers=made["unet"]["state"] if "unet" in made else None,
        text_encoder_lora_layers=made["text_encoder"]["state"] if "text_encoder" in made else None,
        safe_serialization=True,
        **metadata,
    )


def sort_header_metadata(path):
    """safetensors keeps `__metadata__` in a Rust HashMap, so its entries come out in a different
    order on each run; put them in sorted order (same bytes otherwise, same length)."""
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    text = data[8 : 8 + length].decode("utf-8")
    header = json.loads(text, object_pairs_hook=dict)

    def dump(value):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    assert dump(header) == text.rstrip(" "), "not safetensors' own json layout"
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    fixed = dump(header).ljust(length).encode("utf-8")
    assert len(fixed) == length
    path.write_bytes(data[:8] + fixed + data[8 + length :])


def kohya_names(component, module):
    """A diffusers / transformers module name -> its kohya-ss LoRA name (SD v1)."""
    if component == "unet":
        return "lora_unet_" + module.replace(".", "_")
    # transformers >= 5.6 has no `text_model.` in CLIPTextModel's names; kohya's names keep it.
    return "lora_te_text_model_" + module.removeprefix("text_model.").replace(".", "_")


def to_kohya(made):
    state = {}
    for component, parts in made.items():
        for module, (rank, alpha) in parts["ranks"].items():
            name = kohya_names(component, module)
            down = parts["state"][f"{module}.lora_A.weight"]
            up = parts["state"][f"{module}.lora_B.weight"]
            assert down.shape[0] == up.shape[1] == rank
            state[f"{name}.lora_down.weight"] = down.half()
            state[f"{name}.lora_up.weight"] = up.half()
            state[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float16)  # 0-d
    return state


def make_ti_files(out):
    vectors = {}
    for token, count in TI_VECTORS.items():
        shape = (24,) if count == 1 else (count, 24)
        vectors[token] = TI_SCALE * randn(shape, seed=TI_SEEDS[token])
    save_file({"<cat-toy>": vectors["<cat-toy>"]}, out / FILES["ti_cat_toy"])  # diffusers format
    save_file({"emb_params": vectors["<style>"]}, out / FILES["ti_style"])  # A1111 format
    return vectors


# --------------------------------------------------------------------------------------------------
# Checks of what diffusers makes of the files.
# --------------------------------------------------------------------------------------------------


def lora_layers(model, adapter):
    return {
        name: layer
        for name, layer in model.named_modules()
        if isinstance(layer, LoraLayer) and adapter in layer.lora_A
    }


def check_loaded(pipe, adapter, made, cast=None, what=""):
    """diffusers' LoRA layers for `adapter` hold our weights (cast to float16 and back for the
    kohya file) and scale them by our alpha / rank."""
    count = 0
    for component, parts in made.items():
        layers = lora_layers(getattr(pipe, component), adapter)
        assert set(layers) == set(parts["ranks"]), (what, set(layers) ^ set(parts["ranks"]))
        for module, (rank, alpha) in parts["ranks"].items():
            layer = layers[module]
            for kind, table in (("A", layer.lora_A), ("B", layer.lora_B)):
                want = parts["state"][f"{module}.lora_{kind}.weight"]
                if cast is not None:
                    want = want.to(cast).float()
                got = table[adapter].weight
                assert got.dtype == torch.float32 and torch.equal(got, want), (what, module, kind)
            assert layer.r[adapter] == rank, (what, module, layer.r[adapter], rank)
            assert layer.scaling[adapter] == alpha / rank, (what, module, layer.scaling[adapter])
            count += 1
    print(f"  {what}: {count} LoRA layers hold the file's weights, scale alpha / rank as made")


def lora_delta(down, up):
    """up @ down as a weight of the base layer's shape (linear, or conv with a 1x1 up)."""
    if down.ndim == 2:
        return up @ down
    return torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down)


@torch.no_grad()
def check_fused(pipe, base_pipe, made, lora_scale):
    """Fused weights = W + lora_scale * alpha / rank * up @ down, for every LoRA layer."""
    worst = 0.0
    for component, parts in made.items():
        fused = dict(getattr(pipe, component).named_modules())
        base = dict(getattr(base_pipe, component).named_modules())
        for module, (rank, alpha) in parts["ranks"].items():
            down = parts["state"][f"{module}.lora_A.weight"]
            up = parts["state"][f"{module}.lora_B.weight"]
            want = base[module].weight + lora_scale * alpha / rank * lora_delta(down, up)
            got = fused[module].get_base_layer().weight
            worst = max(worst, float((got - want).abs().max()))
    assert worst < 1e-6, worst
    print(f"  fuse_lora: W + {lora_scale} * alpha / rank * up @ down in every layer "
          f"(max |diff| {worst:.1e})")


KOHYA_EXAMPLES = [
    "lora_unet_up_blocks_2_resnets_2_conv2",
    "lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn1_to_out_0",
    "lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_ff_net_0_proj",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te_text_model_encoder_layers_1_mlp_fc1",
]


def kohya_examples(kohya):
    """What diffusers' kohya converter makes of a few of our names (its intermediate, pre-peft
    names; load_lora_weights then renames them to peft's and strips `text_model.`)."""
    examples = {}
    for name in KOHYA_EXAMPLES:
        part = {key: value for key, value in kohya.items() if key.split(".")[0] == name}
        assert len(part) == 3, name
        converted, alphas = _convert_non_diffusers_lora_to_diffusers(part)
        (down,) = [key for key in converted if key.endswith("down.weight")]
        ((alpha_name, alpha),) = alphas.items()
        examples[f"{name}.lora_down.weight"] = down
        examples[f"{name}.alpha"] = {alpha_name: alpha}
    return examples


# --------------------------------------------------------------------------------------------------
# Goldens.
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def run_case(pipe, name, prompt, negative, noise):
    """diffusers' images and prompt embeddings (positive, negative) for one case."""
    spec = dict(prompt=[prompt], negative_prompt=[negative], guidance_scale=GUIDANCE)
    images, _ = run_pipeline(pipe, spec, noise)
    positive, negative_embeds = pipe.encode_prompt(
        [prompt], "cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
        negative_prompt=[negative],
    )
    images = images.astype(np.float32)
    assert np.isfinite(images).all()
    saturated = float(((images == 0.0) | (images == 1.0)).mean())
    assert saturated < 0.5 and images.std() > 0.02, (name, saturated, images.std())
    assert_lively(f"{name}_prompt_embeds", positive.numpy())
    return dict(images=images, prompt_embeds=positive.numpy(),
                negative_prompt_embeds=negative_embeds.numpy())


def ti_token_ids(pipe):
    converted = [pipe.maybe_convert_prompt(prompt, pipe.tokenizer) for prompt in TI_TOKEN_PROMPTS]
    ids = pipe.tokenizer(
        converted, padding="max_length", max_length=MAX_LENGTH, truncation=True,
        return_tensors="np",
    ).input_ids.astype(np.int64)
    return converted, ids


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "fixtures")
    args = parser.parse_args()
    out = args.out
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # one fixed reduction order
    torch.use_deterministic_algorithms(True)
    # transformers prints a "load report" listing every base weight as missing from an adapter.
    transformers.logging.set_verbosity_error()

    print("making the adapters with peft")
    maker = load_pipe(out)
    made_a = make_lora(maker, "a", ADAPTER_A)
    made_b = make_lora(maker, "b", ADAPTER_B)
    del maker
    save_peft(out, FILES["peft_a"], made_a, with_metadata=True)
    sort_header_metadata(out / FILES["peft_a"])
    save_peft(out, FILES["peft_b"], made_b, with_metadata=False)
    kohya = to_kohya(made_a)
    save_file(kohya, out / FILES["kohya_a"])
    vectors = make_ti_files(out)
    for name in ("peft_a", "peft_b", "kohya_a"):
        with safe_open(out / FILES[name], framework="pt") as handle:
            header = handle.metadata() or {}
        print(f"  {FILES[name]}: {len(load_file(out / FILES[name]))} tensors, "
              f"header {sorted(header)}")
    with safe_open(out / FILES["peft_a"], framework="pt") as handle:
        header_a = json.loads(handle.metadata()["lora_adapter_metadata"])

    print("loading them back with diffusers")
    shape = (1, 4, PIPELINE_HEIGHT // 2, PIPELINE_WIDTH // 2)  # tiny-sd's VAE: scale factor 2
    noises = {
        "base_noise": randn(shape, seed=NOISE_SEED), "ti_noise": randn(shape, seed=TI_NOISE_SEED)
    }
    results, meta_cases = {}, {}

    def case(pipe, name, noise="base_noise", prompt=PROMPT, negative=NEGATIVE, **settings):
        assert pipe.vae_scale_factor == 2
        results[name] = run_case(pipe, name, prompt, negative, noises[noise])
        meta_cases[name] = dict(
            what=CASES[name], prompt=prompt, negative_prompt=negative,
            num_inference_steps=PIPELINE_STEPS, guidance_scale=GUIDANCE, eta=0.0,
            height=PIPELINE_HEIGHT, width=PIPELINE_WIDTH, **settings,
            arrays=dict(
                noise=noise, images=f"{name}_images", prompt_embeds=f"{name}_prompt_embeds"
            ),
        )

    base = load_pipe(out)
    case(base, "base")

    pipe = load_pipe(out)
    pipe.load_lora_weights(out / FILES["peft_a"], adapter_name="a", local_files_only=True)
    check_loaded(pipe, "a", made_a, what="lora_peft_a (alpha from its metadata)")
    pipe.set_adapters(["a"], [0.7])
    case(pipe, "peft_a", adapters={"a": 0.7})
    pipe.load_lora_weights(out / FILES["peft_b"], adapter_name="b", local_files_only=True)
    check_loaded(pipe, "b", made_b, what="lora_peft_b (no metadata: alpha = rank)")
    pipe.set_adapters(["a", "b"], [0.5, 1.0])
    case(pipe, "stacked", adapters={"a": 0.5, "b": 1.0})
    pipe.set_adapters(["b"], [1.0])
    case(pipe, "only_b", adapters={"b": 1.0})
    pipe.unload_lora_weights()
    assert not lora_layers(pipe.unet, "b") and not lora_layers(pipe.text_encoder, "a")
    case(pipe, "unloaded", adapters={})

    pipe = load_pipe(out)
    pipe.load_lora_weights(out / FILES["peft_a"], adapter_name="a", local_files_only=True)
    pipe.fuse_lora(lora_scale=0.7)
    check_fused(pipe, base, made_a, 0.7)
    case(pipe, "peft_a_fused", adapters={"a": 0.7}, fused=True)

    pipe = load_pipe(out)
    converted, _ = StableDiffusionPipeline.lora_state_dict(out / FILES["kohya_a"])
    assert len(converted) == 2 * len(made_a["unet"]["ranks"]) + 2 * len(
        made_a["text_encoder"]["ranks"]
    )
    pipe.load_lora_weights(out / FILES["kohya_a"], adapter_name="a_kohya", local_files_only=True)
    check_loaded(pipe, "a_kohya", made_a, cast=torch.float16, what="lora_kohya_a (float16)")
    pipe.set_adapters(["a_kohya"], [0.7])
    case(pipe, "kohya_a", adapters={"a_kohya": 0.7})

    pipe = load_pipe(out)
    vocab_size = len(pipe.tokenizer)
    pipe.load_textual_inversion(out / FILES["ti_cat_toy"], local_files_only=True)
    pipe.load_textual_inversion(out / FILES["ti_style"], token="<style>", local_files_only=True)
    added = {token: pipe.tokenizer.convert_tokens_to_ids(token)
             for token in ["<cat-toy>", "<style>", "<style>_1", "<style>_2"]}
    assert list(added.values()) == list(range(vocab_size, vocab_size + 4)), added
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[added["<cat-toy>"]], vectors["<cat-toy>"])
    assert torch.equal(table[vocab_size + 1 : vocab_size + 4], vectors["<style>"])
    case(pipe, "ti", "ti_noise", TI_PROMPT, TI_NEGATIVE, tokens=added)
    meta_cases["ti"]["arrays"]["negative_prompt_embeds"] = "ti_negative_prompt_embeds"
    converted_prompts, ti_ids = ti_token_ids(pipe)
    # The same prompts on tiny-sd without the embeddings (plain BPE text), for the printout only.
    plain = run_case(base, "ti_plain", TI_PROMPT, TI_NEGATIVE, noises["ti_noise"])

    print("per case, max |diff| (mean |diff|) of the images to base's:")
    for name, result in results.items():
        reference = plain if name == "ti" else results["base"]
        diff = np.abs(result["images"] - reference["images"])
        note = " (to the same prompts without the embeddings)" if name == "ti" else ""
        print(f"  {name:13s} {diff.max():.6f} ({diff.mean():.6f}){note}")
        meta_cases[name]["max_abs_diff_to_base"] = float(diff.max())
        meta_cases[name]["mean_abs_diff_to_base"] = float(diff.mean())
        if name not in ("base", "unloaded"):
            assert diff.mean() > 0.02, (name, diff.mean())
    # Exact copies are stored once: b has no text-encoder layers, and unloading restores tiny-sd.
    assert np.array_equal(results["unloaded"]["images"], results["base"]["images"])
    for name in ("only_b", "unloaded"):
        assert np.array_equal(results[name]["prompt_embeds"], results["base"]["prompt_embeds"])
        meta_cases[name]["arrays"]["prompt_embeds"] = "base_prompt_embeds"
    gaps = {
        "peft_a_fused vs peft_a": ("peft_a_fused", "peft_a", 1e-5),
        "kohya_a vs peft_a": ("kohya_a", "peft_a", 5e-3),  # float16 weights
    }
    for label, (one, other, tolerance) in gaps.items():
        images = float(np.abs(results[one]["images"] - results[other]["images"]).max())
        embeds = results[one]["prompt_embeds"] - results[other]["prompt_embeds"]
        embeds = float(np.abs(embeds).max())
        print(f"  {label}: images {images:.2e}, prompt embeds {embeds:.2e}")
        assert images < tolerance and embeds < tolerance, (label, images, embeds)
        meta_cases[one][f"max_abs_diff_to_{other}"] = dict(images=images, prompt_embeds=embeds)

    arrays = dict(noises)
    for name, result in results.items():
        arrays[f"{name}_images"] = result["images"]
        if meta_cases[name]["arrays"]["prompt_embeds"] == f"{name}_prompt_embeds":
            arrays[f"{name}_prompt_embeds"] = result["prompt_embeds"]
    arrays["ti_negative_prompt_embeds"] = results["ti"]["negative_prompt_embeds"]
    arrays["ti_tok_ids"] = ti_ids
    arrays = {name: array.numpy() if isinstance(array, torch.Tensor) else array
              for name, array in arrays.items()}
    for name, array in arrays.items():
        if np.issubdtype(array.dtype, np.floating):
            assert array.dtype == np.float32, name
    for spec in meta_cases.values():
        assert all(name in arrays for name in spec["arrays"].values())
    header_keys = ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora")
    meta = dict(
        made_by="tools/make_adapter_fixtures.py",
        versions=dict(
            torch=torch.__version__, diffusers=diffusers.__version__,
            transformers=transformers.__version__, peft=peft.__version__,
            safetensors=safetensors.__version__,
        ),
        layout=(
            "noise NCHW (1, 4, 16, 24), the latents= diffusers takes (sdlib: transpose to NHWC); "
            "<case>_images NHWC float32 in [0, 1] (output_type='np'); prompt embeds (1, 77, 24). "
            "cases[<case>]['arrays'] names each case's arrays: the LoRA cases share base_noise, "
            "and only_b / unloaded have base's prompt embeds (equal, so stored once)"
        ),
        calls=CALLS,
        files={name: dict(file=filename, bytes=(out / filename).stat().st_size)
               for name, filename in FILES.items()},
        lora=dict(
            formula=(
                "W' = W + sum over active adapters of weight * (alpha / rank) * up @ down, "
                "with up @ down as (out, rank) @ (rank, in * kh * kw) for convs (up is 1x1)"
            ),
            a=dict(
                config=ADAPTER_A,
                header=(
                    "__metadata__['lora_adapter_metadata']: json of {'unet.<field>': ..., "
                    "'text_encoder.<field>': ...}, each model's LoraConfig.to_dict()"
                ),
                header_main_fields={key: value for key, value in header_a.items()
                                    if key.split(".", 1)[1] in header_keys},
                gains={component: LORA_GAINS[("a", component)] for component in ADAPTER_A},
            ),
            b=dict(config=ADAPTER_B, header="none (only {'format': 'pt'})",
                   gains={"unet": LORA_GAINS[("b", "unet")]}),
            kohya=dict(
                dtype="float16; alpha a 0-d float16 tensor",
                unet="lora_unet_ + the diffusers module name with . -> _",
                text_encoder="lora_te_text_model_ + the CLIPTextModel module name with . -> _",
                diffusers_conversion=kohya_examples(kohya),
                diffusers_alphas=(
                    "diffusers takes the most common alpha as lora_alpha and the others as an "
                    "alpha_pattern keyed by these names; only the resnet ones (with '.lora.') "
                    "name a module, so a differing alpha of an attention or text-encoder layer "
                    "would be lost there. Here only conv2's differ (3 against 8)"
                ),
            ),
        ),
        textual_inversion=dict(
            tokens=added,
            vocab_size_before=vocab_size,
            files={"ti_cat_toy": "{'<cat-toy>': (24,)}", "ti_style": "{'emb_params': (3, 24)}"},
            scale=TI_SCALE,
            ti_tok_prompts=TI_TOKEN_PROMPTS,
            ti_tok_converted=converted_prompts,
        ),
        cases=meta_cases,
        arrays={name: dict(shape=list(array.shape), dtype=str(array.dtype))
                for name, array in arrays.items()},
    )
    save_npz(out / "adapters_golden.npz", arrays)
    (out / "adapters_golden.json").write_text(
        json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(f"files under {out}")
    print_sizes(out)
    new = [*FILES.values(), "adapters_golden.npz", "adapters_golden.json"]
    sizes = {filename: (out / filename).stat().st_size for filename in new}
    print(f"  {sum(sizes.values()):>10,d}  of them written here: {', '.join(sorted(sizes))}")


if __name__ == "__main__":
    main()
