"""Write tests/fixtures/tokenizer_golden.json: token ids from HuggingFace
transformers' CLIPTokenizer.

A maintainer's script, run by hand in an environment with transformers (never imported by sdlib or
its tests):

    refenv/bin/python tools/make_tokenizer_fixture.py

It derives vocab.json and merges.txt from OpenAI's bpe_simple_vocab_16e6.txt.gz exactly as CLIP's
`simple_tokenizer.py` builds its vocab, loads them the way diffusers does
(`CLIPTokenizer.from_pretrained(folder)`, `tokenizer(prompt, padding="max_length", max_length=77,
truncation=True)`), and records the ids of tricky prompts: SD v1 (pad "<|endoftext|>"), SD 2 (pad
"!") and three tokenizer folders whose configs set special tokens the way hub folders do.
"""

import gzip
import json
import tempfile
from pathlib import Path

import tokenizers
import transformers

REPO = Path(__file__).resolve().parents[1]
VOCAB_GZ = REPO / "sdlib" / "assets" / "bpe_simple_vocab_16e6.txt.gz"
FIXTURE = REPO / "tests" / "fixtures" / "tokenizer_golden.json"
MAX_LENGTH = 77

OVER_LONG = (
    "a breathtaking matte painting of a lighthouse on a cliff at dusk, stormy sea, crashing waves, "
    "dramatic clouds, volumetric light, god rays, highly detailed, intricate, sharp focus, 8k, "
    "trending on artstation, by greg rutkowski and alphonse mucha and thomas kinkade, "
    "golden hour, cinematic composition, award winning photograph, unreal engine 5, octane render"
)

SD1_PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "A Photo Of A CAT",
    "   leading and trailing spaces   ",
    "multiple     spaces\tand\ttabs\nand\nnewlines\r\n",
    "\t\n ",
    "wow!!! what?!? ... --- *** ~~",
    "it's a dog's life, don't you think? they're here, we've been, I'm sure, we'll see, he'd go",
    "IT'S LOUD, DON'T SHOUT",
    "rock'n'roll",
    "'quoted' and \"double quoted\" and `backticks`",
    "1234",
    "3.14 and 2x zoom, 1080p, 4k, 1/2",
    "café",
    "cafe\u0301",
    "naïve résumé über straße",
    "東京の夜景",
    "🐱 cat emoji 👍🏽 and 👨\u200d👩\u200d👧 family",
    "Москва ночью",
    "ΟΔΟΣ Ελλάδα",
    "<|startoftext|>a cat<|endoftext|>",
    "a<|endoftext|>b",
    "<|ENDOFTEXT|> shouted special",
    "",
    OVER_LONG,
    "a " * 75,
    "a " * 76,
    "x" * 200,
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a\u00a0b\u3000c\u2003d\u0085e",
    "zero\u200bwidth",
    "\ufb01ne ligature",
    "\u01c4 and \u01c5 digraphs",
    "İstanbul",
    "'ſ long s",
    "\x1cfile separator",
    "masterpiece, best quality, (ultra detailed:1.2), [bad hands], <lora:foo:0.8>",
    "C++ and C# and node.js",
    "email@example.com https://example.com/path?x=1",
    "\u0663\u0664\u0665 arabic digits, ²³ superscripts",
    "½ ⅓ Ⅻ",
    "\u1100\u1161 jamo",
    "\u2126 ohm and \u212a kelvin",
    "hello world!",
]

SD2_PROMPTS = ["a photo of a cat", "", "wow!", "hello! world!!", "!", OVER_LONG]

SPECIAL_TOKEN_PROMPTS = [
    "<|StartOfText|> hi",
    "<|ENDOFTEXT|>",
    "x<|startoftext|>y",
    "wow!",
    "a photo of a cat",
]


def added_token(content: str, normalized: bool) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": normalized,
        "rstrip": False,
        "single_word": False,
    }


def legacy_config(normalized: bool) -> dict:
    """tokenizer_config.json as transformers < 4.34 saved it (CompVis/stable-diffusion-v1-4)."""
    return {
        "bos_token": {"__type": "AddedToken", **added_token("<|startoftext|>", normalized)},
        "eos_token": {"__type": "AddedToken", **added_token("<|endoftext|>", normalized)},
        "unk_token": {"__type": "AddedToken", **added_token("<|endoftext|>", normalized)},
        "pad_token": "<|endoftext|>",
        "model_max_length": MAX_LENGTH,
        "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer",
    }


def legacy_special_tokens_map(pad_token: str) -> dict:
    return {
        "bos_token": added_token("<|startoftext|>", True),
        "eos_token": added_token("<|endoftext|>", True),
        "unk_token": added_token("<|endoftext|>", True),
        "pad_token": pad_token,
    }


FOLDERS = {
    "sd1_legacy": {
        "tokenizer_config.json": legacy_config(True),
        "special_tokens_map.json": legacy_special_tokens_map("<|endoftext|>"),
    },
    "sd2_legacy": {
        "tokenizer_config.json": legacy_config(True),
        "special_tokens_map.json": legacy_special_tokens_map("!"),
    },
    "sd2_modern": {
        "tokenizer_config.json": {
            "added_tokens_decoder": {
                "0": {**added_token("!", False), "special": True},
                "49406": {**added_token("<|startoftext|>", True), "special": True},
                "49407": {**added_token("<|endoftext|>", False), "special": True},
            },
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "!",
            "model_max_length": MAX_LENGTH,
            "tokenizer_class": "CLIPTokenizer",
        },
        # Ignored by transformers when tokenizer_config.json has added_tokens_decoder.
        "special_tokens_map.json": legacy_special_tokens_map("<|endoftext|>"),
    },
}


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP's simple_tokenizer.py, verbatim in behaviour."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_vocab_folder(folder: Path) -> None:
    """vocab.json + merges.txt, as CLIP's SimpleTokenizer builds its encoder from the gz file."""
    lines = gzip.open(VOCAB_GZ).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [token + "</w>" for token in vocab]
    vocab += ["".join(merge) for merge in merges] + ["<|startoftext|>", "<|endoftext|>"]
    encoder = dict(zip(vocab, range(len(vocab)), strict=True))
    assert len(encoder) == 49408 and len(merges) == 48894
    (folder / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")


def token_ids(tokenizer, prompts: list[str]) -> list[dict]:
    cases = []
    for prompt in prompts:
        ids = tokenizer(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True)[
            "input_ids"
        ]
        assert len(ids) == MAX_LENGTH, (prompt, len(ids))
        cases.append({"prompt": prompt, "ids": ids})
    return cases


def check_agree(reference: list[dict], other, label: str) -> None:
    for case in reference:
        ids = token_ids(other, [case["prompt"]])[0]["ids"]
        assert ids == case["ids"], f"{label} disagrees on {case['prompt']!r}"


def main() -> None:
    with tempfile.TemporaryDirectory() as temp:
        vocab_folder = Path(temp)
        write_vocab_folder(vocab_folder)
        load = transformers.CLIPTokenizer.from_pretrained
        sd1 = load(vocab_folder, model_max_length=MAX_LENGTH, pad_token="<|endoftext|>")
        sd2 = load(vocab_folder, model_max_length=MAX_LENGTH, pad_token="!")
        assert (sd1.bos_token_id, sd1.eos_token_id, sd1.pad_token_id, sd2.pad_token_id) == (
            49406,
            49407,
            49407,
            0,
        )
        golden = {
            "about": (
                "Token ids from transformers' CLIPTokenizer, loaded from vocab.json + merges.txt "
                "derived from sdlib/assets/bpe_simple_vocab_16e6.txt.gz; written by "
                "tools/make_tokenizer_fixture.py."
            ),
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "max_length": MAX_LENGTH,
            "sd1": token_ids(sd1, SD1_PROMPTS),
            "sd2_pad_bang": token_ids(sd2, SD2_PROMPTS),
            "folders": {},
        }

        fast_class = getattr(transformers, "CLIPTokenizerFast", None)
        if fast_class is not None and fast_class is not transformers.CLIPTokenizer:
            fast = fast_class.from_pretrained(
                vocab_folder, model_max_length=MAX_LENGTH, pad_token="<|endoftext|>"
            )
            check_agree(golden["sd1"], fast, "CLIPTokenizerFast")
            print("CLIPTokenizerFast agrees on every prompt")
        else:
            print(
                "CLIPTokenizerFast is CLIPTokenizer in this transformers; "
                "nothing separate to compare"
            )

        vocab = json.loads((vocab_folder / "vocab.json").read_text(encoding="utf-8"))
        merges = (vocab_folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
        direct = transformers.CLIPTokenizer(
            vocab=vocab,
            merges=[tuple(line.split()) for line in merges],
            model_max_length=MAX_LENGTH,
        )
        check_agree(golden["sd1"], direct, "CLIPTokenizer(vocab=..., merges=...)")

        for name, files in FOLDERS.items():
            folder = vocab_folder / name
            folder.mkdir()
            for file_name in ("vocab.json", "merges.txt"):
                (folder / file_name).write_bytes((vocab_folder / file_name).read_bytes())
            for file_name, content in files.items():
                (folder / file_name).write_text(json.dumps(content, indent=2), encoding="utf-8")
            tokenizer = load(folder)
            assert tokenizer.model_max_length == MAX_LENGTH
            golden["folders"][name] = {
                "files": files,
                "cases": token_ids(tokenizer, SPECIAL_TOKEN_PROMPTS),
            }

    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(dumps_compact(golden) + "\n", encoding="ascii")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1024:.1f} KB)")


def dumps_compact(golden: dict) -> str:
    """JSON with one case per line, ASCII-escaped so NFC/NFD and invisible characters stay
    visible."""
    lines = ["{"]
    for index, (key, value) in enumerate(golden.items()):
        comma = "," if index < len(golden) - 1 else ""
        if isinstance(value, list):
            rows = ",\n".join(f"    {json.dumps(case)}" for case in value)
            lines.append(f'  "{key}": [\n{rows}\n  ]{comma}')
        else:
            lines.append(f'  "{key}": {json.dumps(value)}{comma}')
    return "\n".join(lines) + "\n}"


if __name__ == "__main__":
    main()
