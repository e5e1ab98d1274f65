"""LoRA and textual inversion on the tiny preset, with files written here: the merged weight is
``W + scale * (alpha / r) * up @ down`` in both file formats, scales re-merge from the base,
unloading is bit-exact, nothing retraces, and every file that does not fit is refused by name with
the pipeline unchanged. (Images against diffusers: tests/test_adapters_parity.py.)"""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import sdlib
from sdlib.errors import CheckpointError
from sdlib.loading.state_dict import keras_weight_map

PROMPT = "a small red circle in the top left on a black background"
ATTN = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # linear (32 -> 32)
CONV = "down_blocks.0.resnets.0.conv1"  # 3x3 conv, 32 -> 32 channels
PROJ = "down_blocks.0.attentions.0.proj_in"  # 1x1 conv
TEXT = "encoder.layers.0.self_attn.q_proj"  # text encoder linear (32 -> 32)


def tiny():
    return sdlib.StableDiffusion.from_preset("tiny", img_height=32, img_width=32,
                                             jit_compile=False)


@pytest.fixture
def pipe():
    return tiny()


def weights(pipe):
    return {(component, name): np.array(variable.numpy())
            for component, model in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder))
            for name, (variable, _) in keras_weight_map(model).items()}


def pairs(seed, rank=4):
    """Random PyTorch-layout (down, up) pairs for the four layers above."""
    rng = np.random.default_rng(seed)

    def draw(*shape):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)

    return {
        ("unet", ATTN): (draw(rank, 32), draw(32, rank)),
        ("unet", CONV): (draw(rank, 32, 3, 3), draw(32, rank, 1, 1)),
        ("unet", PROJ): (draw(rank, 32, 1, 1), draw(32, rank, 1, 1)),
        ("text_encoder", TEXT): (draw(rank, 32), draw(32, rank)),
    }


def write_peft(path, modules, metadata=None, text_prefix="text_model."):
    state = {}
    for (component, module), (down, up) in modules.items():
        prefix = f"{component}.{text_prefix if component == 'text_encoder' else ''}{module}"
        state[f"{prefix}.lora_A.weight"], state[f"{prefix}.lora_B.weight"] = down, up
    header = {"lora_adapter_metadata": json.dumps(metadata)} if metadata else None
    save_file(state, str(path), metadata=header)
    return str(path)


def write_kohya(path, modules, alphas=None, dtype=np.float16):
    state = {}
    for (component, module), (down, up) in modules.items():
        name = ("lora_unet_" + module if component == "unet"
                else "lora_te_text_model_" + module).replace(".", "_")
        state[f"{name}.lora_down.weight"] = down.astype(dtype)
        state[f"{name}.lora_up.weight"] = up.astype(dtype)
        if alphas is not None and module in alphas:
            state[f"{name}.alpha"] = np.array(alphas[module], dtype=dtype)
    save_file(state, str(path))
    return str(path)


def expected_delta(down, up, alpha):
    """Hu et al.'s update, written out per layer kind, in Keras layout."""
    rank = down.shape[0]
    if down.ndim == 2:
        return (alpha / rank) * (up @ down).T  # (in, out)
    delta = np.einsum("or,rikl->oikl", up[:, :, 0, 0], down)  # (out, in, kh, kw)
    return (alpha / rank) * delta.transpose(2, 3, 1, 0)  # (kh, kw, in, out)


def test_peft_file_merges_w_plus_scale_alpha_over_rank_up_down(pipe, tmp_path):
    modules = pairs(0)
    metadata = {"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"conv1": 2},
                "unet.rank_pattern": {}, "text_encoder.r": 4, "text_encoder.lora_alpha": 1}
    base = weights(pipe)
    name = pipe.load_lora_weights(write_peft(tmp_path / "a.safetensors", modules, metadata),
                                  scale=0.7)
    assert name == "default_0"
    merged = weights(pipe)
    alphas = {ATTN: 8, CONV: 2, PROJ: 8, TEXT: 1}  # conv1 from alpha_pattern
    for (component, module), (down, up) in modules.items():
        key = (component, f"{module}.weight")
        want = base[key] + 0.7 * expected_delta(down, up, alphas[module])
        np.testing.assert_allclose(merged[key], want, rtol=1e-5, atol=1e-6)
    untouched = [key for key in base if key[1].removesuffix(".weight") not in alphas]
    assert all(np.array_equal(base[key], merged[key]) for key in untouched)


def test_without_metadata_alpha_is_rank_and_kohya_gives_the_same_weights(tmp_path):
    modules = pairs(1)
    peft = tiny()
    kohya = tiny()
    base = weights(peft)
    peft.load_lora_weights(write_peft(tmp_path / "p.safetensors", modules, text_prefix=""))
    # kohya with every alpha = rank, stored in float16 as most shared files are
    halves = {key: tuple(array.astype(np.float16).astype(np.float32) for array in pair)
              for key, pair in modules.items()}
    kohya.load_lora_weights(write_kohya(tmp_path / "k.safetensors", modules,
                                        alphas={module: 4 for _, module in modules}))
    for (component, module), (down, up) in modules.items():
        key = (component, f"{module}.weight")
        np.testing.assert_allclose(weights(peft)[key], base[key] + expected_delta(down, up, 4),
                                   rtol=1e-5, atol=1e-6)
        down16, up16 = halves[component, module]
        np.testing.assert_allclose(weights(kohya)[key],
                                   base[key] + expected_delta(down16, up16, 4),
                                   rtol=1e-5, atol=1e-6)


def test_kohya_alpha_missing_in_the_whole_file_means_rank(pipe, tmp_path):
    modules = {key: value for key, value in pairs(2, rank=2).items() if key[1] == ATTN}
    base = weights(pipe)
    pipe.load_lora_weights(write_kohya(tmp_path / "k.safetensors", modules))
    down, up = (array.astype(np.float16).astype(np.float32) for array in modules["unet", ATTN])
    key = ("unet", f"{ATTN}.weight")
    np.testing.assert_allclose(weights(pipe)[key], base[key] + expected_delta(down, up, 2),
                               rtol=1e-5, atol=1e-6)


def test_scales_remerge_from_the_base_and_unload_is_bit_exact(pipe, tmp_path):
    base = weights(pipe)
    before = pipe.text_to_image(PROMPT, num_steps=2, seed=0, verbose=False)
    traces = dict(pipe.trace_counts)
    pipe.load_lora_weights(write_peft(tmp_path / "a.safetensors", pairs(3)), adapter_name="a")
    pipe.load_lora_weights(write_peft(tmp_path / "b.safetensors", pairs(4)), scale=0.5)
    assert pipe.lora_scales == {"a": 1.0, "default_1": 0.5}
    pipe.set_lora_scales({"a": 0.3, "default_1": 1.0})
    once = weights(pipe)
    for scales in ({"a": 2.0}, {"default_1": -1.0}, {"a": 0.3, "default_1": 1.0}):
        pipe.set_lora_scales(scales)
    again = weights(pipe)
    assert all(np.array_equal(once[key], again[key]) for key in once)  # no drift
    pipe.set_lora_scales({"a": 1.0})  # default_1 not named: switched off, still loaded
    assert pipe.lora_scales == {"a": 1.0, "default_1": 0.0}
    assert not np.array_equal(pipe.text_to_image(PROMPT, num_steps=2, seed=0, verbose=False),
                              before)
    pipe.unload_lora_weights()
    after = weights(pipe)
    assert all(np.array_equal(base[key], after[key]) for key in base)
    np.testing.assert_array_equal(pipe.text_to_image(PROMPT, num_steps=2, seed=0, verbose=False),
                                  before)
    assert pipe.trace_counts == traces  # loading, rescaling and unloading never recompile
    assert pipe.load_lora_weights(write_peft(tmp_path / "c.safetensors", pairs(5))) == "default_0"


def test_duplicate_and_unknown_names_are_errors(pipe, tmp_path):
    path = write_peft(tmp_path / "a.safetensors", pairs(6))
    pipe.load_lora_weights(path, adapter_name="style")
    with pytest.raises(ValueError, match="'style' is loaded already"):
        pipe.load_lora_weights(path, adapter_name="style")
    with pytest.raises(ValueError, match="No adapter named 'detail'; loaded: style"):
        pipe.set_lora_scales({"detail": 1.0})
    with pytest.raises(ValueError, match="finite"):
        pipe.set_lora_scales({"style": float("nan")})
    with pytest.raises(ValueError, match="finite"):
        pipe.load_lora_weights(path, scale=float("inf"))


def unchanged(pipe, base):
    now = weights(pipe)
    return all(np.array_equal(base[key], now[key]) for key in base)


@pytest.mark.parametrize("case, match", [
    ("unmatched", "match no linear or conv layer.*down_blocks.0.attentions.0.nope"),
    ("sd2", "do not fit.*seems made for SD 2.x"),
    ("loha", "LoHa"),
    ("dora", "DoRA"),
    ("sdxl", "SDXL"),
    ("half", "no up \\(lora_B\\)"),
    ("other", "is not a LoRA file"),
])
def test_files_that_do_not_fit_are_refused_and_change_nothing(pipe, tmp_path, case, match):
    base = weights(pipe)
    modules = pairs(7)
    path = tmp_path / "bad.safetensors"
    if case == "unmatched":
        modules["unet", "down_blocks.0.attentions.0.nope"] = modules["unet", ATTN]
        write_peft(path, modules)
    elif case == "sd2":  # cross-attention keys of width 1024
        rng = np.random.default_rng(0)
        modules["unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"] = (
            rng.standard_normal((4, 1024), dtype=np.float32),
            rng.standard_normal((32, 4), dtype=np.float32))
        write_peft(path, modules)
    elif case == "loha":
        save_file({"lora_unet_x.hada_w1_a": np.zeros((2, 2), np.float32)}, str(path))
    elif case == "dora":
        write_peft(path, modules, {"unet.r": 4, "unet.lora_alpha": 4, "unet.use_dora": True})
    elif case == "sdxl":
        save_file({"lora_te2_text_model_x.lora_down.weight": np.zeros((2, 2), np.float32)},
                  str(path))
    elif case == "half":
        save_file({f"unet.{ATTN}.lora_A.weight": np.zeros((4, 32), np.float32)}, str(path))
    else:
        save_file({"model.weight": np.zeros((2, 2), np.float32)}, str(path))
    with pytest.raises(CheckpointError, match=match):
        pipe.load_lora_weights(str(path))
    assert unchanged(pipe, base) and pipe.lora_scales == {}


def test_pickles_are_refused_unread(pipe, tmp_path):
    path = tmp_path / "lora.pt"
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match="never unpickles"):
        pipe.load_lora_weights(str(path))
    with pytest.raises(CheckpointError, match="never unpickles"):
        pipe.load_textual_inversion(str(path))


def test_textual_inversion_adds_tokens_rows_and_expands_prompts(pipe, tmp_path):
    rng = np.random.default_rng(0)
    one = rng.standard_normal(32).astype(np.float32)
    three = rng.standard_normal((3, 32)).astype(np.float32)
    save_file({"<cat-toy>": one}, str(tmp_path / "cat.safetensors"))
    save_file({"emb_params": three}, str(tmp_path / "my-style.safetensors"))
    before = pipe.encode_text(PROMPT)
    vocab = pipe.tokenizer.vocab_size
    assert pipe.load_textual_inversion(str(tmp_path / "cat.safetensors")) == ["<cat-toy>"]
    tokens = pipe.load_textual_inversion(str(tmp_path / "my-style.safetensors"))
    assert tokens == ["my-style", "my-style_1", "my-style_2"]  # A1111: named after the file
    ids = pipe.tokenizer(["a <Cat-Toy>, in my-style!"])[0]
    word = pipe.tokenizer(["a"])[0][1]
    comma, bang = pipe.tokenizer([","])[0][1], pipe.tokenizer(["!"])[0][1]
    in_ = pipe.tokenizer(["in"])[0][1]
    expected = [pipe.tokenizer.bos_id, word, vocab, comma, in_, vocab + 1, vocab + 2, vocab + 3,
                bang, pipe.tokenizer.eos_id]
    assert list(ids[:len(expected)]) == expected
    table = pipe.text_encoder.embeddings.token_embedding.embeddings.numpy()
    assert table.shape == (vocab + 4, 32) and pipe.text_encoder.config.vocab_size == vocab + 4
    np.testing.assert_array_equal(table[vocab], one)
    np.testing.assert_array_equal(table[vocab + 1:], three)
    np.testing.assert_allclose(pipe.encode_text(PROMPT), before, atol=1e-6)  # old words unchanged
    with pytest.raises(ValueError, match="exists already"):
        pipe.load_textual_inversion(str(tmp_path / "cat.safetensors"))
    save_file({"<wide>": np.zeros((1, 1024), np.float32)}, str(tmp_path / "wide.safetensors"))
    with pytest.raises(CheckpointError, match="width 1024.*SD 2.x"):
        pipe.load_textual_inversion(str(tmp_path / "wide.safetensors"))
    assert len(pipe.tokenizer) == vocab + 4  # the refused files added nothing
    pipe.unload_lora_weights()  # leaves embeddings alone
    assert pipe.tokenizer(["<cat-toy>"])[0][1] == vocab
    images = pipe.text_to_image("a <cat-toy>", num_steps=2, seed=0, verbose=False)
    assert images.shape == (1, 32, 32, 3)
