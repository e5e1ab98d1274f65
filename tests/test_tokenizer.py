"""Tests for sdlib.tokenizer: ids match transformers' CLIPTokenizer (golden fixture), padding,
truncation, folder loading and error messages. Numpy only; the fixture comes from
tools/make_tokenizer_fixture.py."""

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from sdlib.tokenizer import CLIPTokenizer, load_default_bpe

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "tokenizer_golden.json").read_text())
BOS, EOS = 49406, 49407


def case_id(case: dict) -> str:
    return ascii(case["prompt"])[:40]


@functools.lru_cache(maxsize=1)
def default_vocab_files() -> dict[str, str]:
    """vocab.json and merges.txt as HuggingFace ships them for openai/clip-vit-large-patch14."""
    vocab, merges = load_default_bpe()
    merges_text = "#version: 0.2\n" + "".join(f"{first} {second}\n" for first, second in merges)
    return {"vocab.json": json.dumps(vocab, ensure_ascii=False), "merges.txt": merges_text}


def write_tokenizer_folder(folder: Path, config_files: dict | None = None) -> Path:
    """A diffusers-style tokenizer/ folder built from the shipped vocab, plus optional json
    configs."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in default_vocab_files().items():
        (folder / name).write_text(text, encoding="utf-8")
    for name, content in (config_files or {}).items():
        (folder / name).write_text(json.dumps(content), encoding="utf-8")
    return folder


def token_row(tokenizer: CLIPTokenizer, prompt: str) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # over-long golden prompts warn; tested below
        return tokenizer(prompt)[0].tolist()


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_default()


@pytest.mark.parametrize("case", GOLDEN["sd1"], ids=case_id)
def test_matches_transformers_sd1(tokenizer, case):
    assert token_row(tokenizer, case["prompt"]) == case["ids"]


@pytest.mark.parametrize("case", GOLDEN["sd2_pad_bang"], ids=case_id)
def test_matches_transformers_sd2_pad_bang(case):
    vocab, merges = load_default_bpe()
    sd2_tokenizer = CLIPTokenizer(vocab, merges, pad_token="!")
    assert sd2_tokenizer.pad_id == 0
    assert token_row(sd2_tokenizer, case["prompt"]) == case["ids"]


@pytest.mark.parametrize("name", sorted(GOLDEN["folders"]))
def test_folder_configs_match_transformers(tmp_path, name):
    folder_case = GOLDEN["folders"][name]
    sd_tokenizer = CLIPTokenizer.from_folder(
        write_tokenizer_folder(tmp_path / name, folder_case["files"])
    )
    for case in folder_case["cases"]:
        assert token_row(sd_tokenizer, case["prompt"]) == case["ids"], case["prompt"]


def test_special_ids_and_sizes(tokenizer):
    vocab, merges = load_default_bpe()
    assert (len(vocab), len(merges)) == (49408, 48894)
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (BOS, EOS, EOS)
    assert (tokenizer.vocab_size, tokenizer.max_length) == (49408, 77)
    assert load_default_bpe() is load_default_bpe()  # parsed once per process


def test_unconditional_prompt_is_bos_then_eos_padding(tokenizer):
    row = tokenizer("")
    assert row.dtype == np.int32 and row.shape == (1, 77)
    assert row[0].tolist() == [BOS] + [EOS] * 76


def test_digits_split_one_per_token(tokenizer):
    assert tokenizer.encode("1234") == [tokenizer.vocab[f"{digit}</w>"] for digit in "1234"]


def test_truncation_keeps_eos_last_and_warns(tokenizer):
    with pytest.warns(UserWarning, match=r"80 tokens.*75 fit.*max_length=77.*last 5 tokens"):
        row = tokenizer("cat " * 80)[0]
    assert row.shape == (77,)
    assert row[0] == BOS and row[-1] == EOS
    assert (row[1:-1] == tokenizer.vocab["cat</w>"]).all()


def test_exactly_full_prompt_does_not_warn(tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = tokenizer("cat " * 75)[0]
    assert row[-1] == EOS and row[-2] == tokenizer.vocab["cat</w>"]


def test_list_and_tuple_input_give_one_row_each(tokenizer):
    prompts = ["a photo of a cat", "", "an oil painting of a dog"]
    rows = tokenizer(prompts)
    assert rows.shape == (3, 77) and rows.dtype == np.int32
    np.testing.assert_array_equal(rows, tokenizer(tuple(prompts)))
    np.testing.assert_array_equal(rows[1], tokenizer("")[0])


def test_short_max_length_truncates_to_fit(tokenizer):
    short = CLIPTokenizer.from_default(max_length=8)
    assert short("a photo of a cat")[0].tolist() == tokenizer("a photo of a cat")[0, :8].tolist()
    with pytest.warns(UserWarning, match="last 2 tokens"):
        row = short("a photo of an astronaut riding a horse")[0].tolist()
    assert row == [BOS, *tokenizer.encode("a photo of an astronaut riding")] + [EOS]


def test_from_folder_matches_default_and_reads_pad_token(tmp_path, tokenizer):
    folder = write_tokenizer_folder(tmp_path / "tokenizer")
    from_folder = CLIPTokenizer.from_folder(folder)
    for case in GOLDEN["sd1"]:
        assert token_row(from_folder, case["prompt"]) == case["ids"], case["prompt"]

    (folder / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    sd2_tokenizer = CLIPTokenizer.from_folder(folder)
    assert sd2_tokenizer.pad_id == 0
    assert (
        token_row(sd2_tokenizer, "a photo of a cat")
        == [BOS, 320, 1125, 539, 320, 2368, EOS] + [0] * 70
    )


def test_from_folder_reads_dict_tokens_and_max_length(tmp_path):
    config = {
        "model_max_length": 16,
        "bos_token": {"content": "<|startoftext|>", "normalized": False},
        "pad_token": {"content": "!", "normalized": False},
    }
    folder = write_tokenizer_folder(tmp_path / "tokenizer", {"tokenizer_config.json": config})
    small = CLIPTokenizer.from_folder(folder)
    assert small("a cat").tolist() == [[BOS, 320, 2368, EOS] + [0] * 12]


def test_from_folder_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        CLIPTokenizer.from_folder(tmp_path)
    folder = write_tokenizer_folder(tmp_path / "tokenizer")
    (folder / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        CLIPTokenizer.from_folder(folder)


@pytest.mark.parametrize(
    "prompts, error, message",
    [
        (3, TypeError, "got a int"),
        (b"a cat", TypeError, "got a bytes"),
        (["a cat", None], TypeError, r"prompts\[1\] is a NoneType"),
        ([], ValueError, "empty list"),
    ],
)
def test_bad_prompts_raise_clear_errors(tokenizer, prompts, error, message):
    with pytest.raises(error, match=message):
        tokenizer(prompts)


def test_special_token_missing_from_vocab_raises():
    vocab, merges = load_default_bpe()
    with pytest.raises(ValueError, match="pad_token '<pad>' is not in the vocab"):
        CLIPTokenizer(vocab, merges, pad_token="<pad>")


def test_decode_round_trip(tokenizer):
    assert tokenizer.decode(tokenizer("A photo of an Astronaut")[0]) == "a photo of an astronaut"
    assert tokenizer.decode(tokenizer.encode("café, 3.14")) == "café , 3 . 1 4"


def test_save_folder_round_trips_added_tokens(tmp_path):
    tokenizer = CLIPTokenizer.from_default()
    tokenizer.add_tokens(["<cat-toy>", "<cat-toy>_1"])
    tokenizer.save_folder(tmp_path)
    again = CLIPTokenizer.from_folder(tmp_path)
    prompts = ["a <Cat-Toy>, on <|endoftext|> grass", "a photo of an astronaut <cat-toy>_1"]
    np.testing.assert_array_equal(again(prompts), tokenizer(prompts))
    assert again.added_tokens == {"<cat-toy>": 49408, "<cat-toy>_1": 49409}
    assert again.max_length == tokenizer.max_length


def test_from_folder_reads_added_tokens_of_transformers_5(tmp_path):
    """transformers 5 keeps added tokens in tokenizer.json's "added_tokens" (with the specials),
    and tokenizer_config.json has no "added_tokens_decoder"."""
    vocab, merges = load_default_bpe()
    entry = {"single_word": False, "lstrip": False, "rstrip": False}
    added = [{"id": 49406, "content": "<|startoftext|>", "normalized": False, "special": True},
             {"id": 49407, "content": "<|endoftext|>", "normalized": False, "special": True},
             {"id": 49408, "content": "<style>", "normalized": True, "special": False}]
    model = {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": vocab,
             "merges": [" ".join(merge) for merge in merges]}
    (tmp_path / "tokenizer.json").write_text(json.dumps(
        {"model": model, "added_tokens": [{**entry, **token} for token in added]}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    tokenizer = CLIPTokenizer.from_folder(tmp_path)
    assert tokenizer.added_tokens == {"<style>": 49408}
    assert tokenizer("<STYLE> cat")[0, :3].tolist() == [49406, 49408, tokenizer.encode("cat")[0]]
