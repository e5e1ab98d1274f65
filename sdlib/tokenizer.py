"""CLIP's byte-level BPE tokenizer: a prompt becomes the 77 token ids SD v1's text encoder reads.

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision",
Sec. 2.4) reads "a lower-cased byte pair encoding (BPE) representation of the text with a 49,152
vocab size", bracketed with [SOS] and [EOS]. BPE is Sennrich et al. 2016; running it on UTF-8 bytes
is GPT-2's trick (Radford et al. 2019, Sec. 2.2). Stable Diffusion v1 conditions on the 77 hidden
states of this sequence (Rombach et al. 2022, Sec. 3.3), so the ids must match the ones the text
encoder was trained with.

Ported from OpenAI's `clip/simple_tokenizer.py` (MIT) and checked id for id against HuggingFace
transformers' `CLIPTokenizer` (the tokenizer diffusers uses; see
tests/fixtures/tokenizer_golden.json and tools/make_tokenizer_fixture.py). Where the two differ, we
follow transformers:

1. special tokens that the user types (`<|endoftext|>`, and `!` when it is SD 2's pad token) are cut
   out of the text first and map straight to their id;
2. normalise: NFC, every whitespace run -> one space, lowercase character by character (so a final
   Greek capital sigma becomes "σ", not Python's context-aware "ς"), no ftfy;
3. pre-tokenise with CLIP's pattern (case-sensitive: OpenAI's `re.IGNORECASE` is dropped), then
   again with GPT-2's pattern, so a typed "<|ENDOFTEXT|>" becomes the words "<|", "endoftext", "|>";
4. byte-level: each UTF-8 byte becomes one printable character (`bytes_to_unicode`);
5. BPE inside each word, whose last symbol carries the end-of-word mark "</w>";
6. [BOS] + ids + [EOS], truncated to `max_length`, padded with the pad token.

Every character up to Unicode 15.1 was checked against transformers one by one. Characters added
in Unicode 16.0 (2024) or later may split differently: transformers' regex engine (Oniguruma, in
tokenizers 0.23) knows Unicode 15.1, while the `regex` package here knows a newer version.
"""

from __future__ import annotations

import functools
import gzip
import json
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import regex

from sdlib.config import read_json
from sdlib.validation import check_prompt

END_OF_WORD = "</w>"
DEFAULT_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # 48,894: CLIP's vocab minus the 256 byte symbols and the 2 specials
DEFAULT_SPECIAL_TOKENS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}

CLIP_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"""
    r"""|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
# transformers' ByteLevel pre-tokenizer splits every CLIP piece again with GPT-2's pattern.
GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
WHITESPACE_RUN = regex.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map each byte 0..255 to a printable character, so BPE never sees whitespace or control bytes.

    Printable Latin-1 bytes map to themselves; the other 68 go to chr(256), chr(257), ...
    (GPT-2's `encoder.py`, copied into CLIP's `simple_tokenizer.py`).
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = [byte for byte in range(256) if byte not in printable]
    table = {byte: chr(byte) for byte in printable}
    table.update({byte: chr(256 + offset) for offset, byte in enumerate(shifted)})
    return table  # insertion order (printable bytes first) is the order of the first 256 vocab ids


def normalize(text: str) -> str:
    """NFC, whitespace runs -> " ", per-character lowercase: transformers' CLIP normaliser."""
    text = WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", text))
    return "".join(character.lower() for character in text)


@functools.lru_cache(maxsize=1)
def load_default_bpe() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Vocab and merges from OpenAI's `bpe_simple_vocab_16e6.txt.gz`, as `simple_tokenizer.py` does.

    Identical to HuggingFace's `vocab.json` (49,408 entries) and `merges.txt` for openai/clip-vit-*.
    """
    packed = (resources.files("sdlib") / "assets" / DEFAULT_VOCAB_FILE).read_bytes()
    lines = gzip.decompress(packed).decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : NUM_MERGES + 1])  # line 0 is a header
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [symbol + END_OF_WORD for symbol in byte_symbols]
    tokens += ["".join(merge) for merge in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: token_id for token_id, token in enumerate(tokens)}, merges


class CLIPTokenizer:
    """Prompts -> (N, max_length) int32 token ids, exactly like transformers' CLIPTokenizer.

    `normalized_tokens` names the special tokens matched after normalisation (so "<|StartOfText|>"
    matches too) rather than on the raw text; `from_folder` reads it from the folder's config.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        max_length: int = 77,
        bos_token: str = "<|startoftext|>",
        eos_token: str = "<|endoftext|>",
        pad_token: str = "<|endoftext|>",
        unk_token: str = "<|endoftext|>",
        normalized_tokens: Iterable[str] = (),
    ):
        if max_length < 2:
            raise ValueError(
                f"max_length must be at least 2 (room for BOS and EOS), got {max_length}."
            )
        special_tokens = {
            "bos_token": bos_token,
            "eos_token": eos_token,
            "pad_token": pad_token,
            "unk_token": unk_token,
        }
        for name, token in special_tokens.items():
            if token not in vocab:
                raise ValueError(
                    f"{name} {token!r} is not in the vocab; pick a token the vocab has."
                )
        self.vocab = vocab
        self.merge_ranks = {tuple(merge): rank for rank, merge in enumerate(merges)}
        self.max_length = max_length
        self.bos_id, self.eos_id = vocab[bos_token], vocab[eos_token]
        self.pad_id, self.unk_id = vocab[pad_token], vocab[unk_token]
        self.special_ids = {vocab[token] for token in special_tokens.values()}
        self._id_to_token = {token_id: token for token, token_id in vocab.items()}
        self._byte_to_char = bytes_to_unicode()
        self._char_to_byte = {char: byte for byte, char in self._byte_to_char.items()}
        self._word_cache: dict[str, tuple[str, ...]] = {}

        # === Special tokens typed in the prompt ===
        normalized_tokens = set(normalized_tokens)
        self.special_tokens, self.normalized_tokens = special_tokens, normalized_tokens
        raw = {
            token: vocab[token]
            for token in special_tokens.values()
            if token not in normalized_tokens
        }
        normalized = {
            normalize(token): vocab[token]
            for token in special_tokens.values()
            if token in normalized_tokens
        }
        self._raw_specials, self._raw_special_pattern = raw, _alternation(raw)
        self._normalized_specials = normalized
        self._normalized_special_pattern = _alternation(normalized)
        self.added_tokens: dict[str, int] = {}  # textual inversion's tokens, in load order

    def add_tokens(self, tokens: Sequence[str]) -> list[int]:
        """New whole-word tokens (textual inversion's), with ids after the vocab and any tokens
        added before, as transformers' ``add_tokens`` gives them: matched in the normalised
        (lower-cased) prompt before BPE, so ``"<Cat-Toy>,"`` holds ``"<cat-toy>"``."""
        for token in tokens:
            if not token or token != token.strip():
                raise ValueError(f"A token must be non-empty, without surrounding spaces: "
                                 f"{token!r}.")
            if token in self.vocab or token in self.added_tokens or token in self._raw_specials:
                raise ValueError(f"The token {token!r} exists already in the tokenizer; pick "
                                 "another token (e.g. token='<my-concept>').")
        ids = []
        for token in tokens:
            token_id = self.vocab_size + len(self.added_tokens)
            self.added_tokens[token] = token_id
            self._normalized_specials.setdefault(normalize(token), token_id)
            self._id_to_token[token_id] = token
            ids.append(token_id)
        self._normalized_special_pattern = _alternation(self._normalized_specials)
        return ids

    def expand_prompt(self, prompt: str) -> str:
        """A multi-vector token ``<t>`` becomes ``<t> <t>_1 <t>_2 ...`` (diffusers'
        ``TextualInversionLoaderMixin.maybe_convert_prompt``, the same rules: tokens found in the
        normalised prompt, replaced in the prompt as typed)."""
        if not self.added_tokens:
            return prompt
        found = {piece for piece, token_id in _split_on(
            normalize(prompt), self._normalized_special_pattern, self._normalized_specials)
            if token_id is not None}
        for token in sorted(found):
            if token not in self.added_tokens:
                continue
            replacement, index = token, 1
            while f"{token}_{index}" in self.added_tokens:
                replacement += f" {token}_{index}"
                index += 1
            prompt = prompt.replace(token, replacement)
        return prompt

    @property
    def vocab_size(self) -> int:
        """The vocab's size; ``len(tokenizer)`` counts the added tokens too."""
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab) + len(self.added_tokens)

    @classmethod
    def from_default(cls, max_length: int = 77) -> CLIPTokenizer:
        """The tokenizer of SD v1 (openai/clip-vit-large-patch14), from the shipped OpenAI vocab."""
        vocab, merges = load_default_bpe()
        return cls(vocab, merges, max_length=max_length)

    @classmethod
    def from_folder(cls, path: str | Path) -> CLIPTokenizer:
        """A diffusers/transformers `tokenizer/` folder: vocab.json, merges.txt, configs."""
        folder = Path(path)
        has_files = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
        if not has_files and (folder / "tokenizer.json").is_file():
            # transformers 5 saves only tokenizer.json: its BPE model holds the same vocab and
            # merges.
            vocab, merges = _read_tokenizer_json(folder / "tokenizer.json")
            return cls(vocab, merges, **_read_special_token_config(folder))._with_saved(folder)
        for name in ("vocab.json", "merges.txt"):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"{folder} has no {name}; a CLIP tokenizer folder needs vocab.json and "
                    "merges.txt or a tokenizer.json (in a diffusers model: <model>/tokenizer/)."
                )
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        merges = _read_merges(folder / "merges.txt")
        return cls(vocab, merges, **_read_special_token_config(folder))._with_saved(folder)

    def _with_saved(self, folder: Path) -> CLIPTokenizer:
        """Add the folder's added tokens (textual inversion's), checking their ids."""
        added = _read_added_tokens(folder, set(self.special_tokens.values()))
        if added:
            ids = self.add_tokens([content for _, content in added])
            if ids != [token_id for token_id, _ in added]:
                raise ValueError(f"{folder}: added tokens {added} do not follow the vocab "
                                 f"({self.vocab_size} entries) in order.")
        return self

    def save_folder(self, path: str | Path) -> None:
        """Write a transformers ``CLIPTokenizer`` folder (vocab.json, merges.txt,
        tokenizer_config.json) that ``from_folder`` and transformers read back, added tokens
        included."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False),
                                           encoding="utf-8")
        merges = sorted(self.merge_ranks, key=self.merge_ranks.get)
        (folder / "merges.txt").write_text(
            "#version: 0.2\n" + "".join(f"{first} {second}\n" for first, second in merges),
            encoding="utf-8")

        def entry(content, normalized, special):
            return {"content": content, "lstrip": False, "normalized": normalized,
                    "rstrip": False, "single_word": False, "special": special}

        decoder = {str(self.vocab[content]): entry(content, content in self.normalized_tokens, True)
                   for content in self.special_tokens.values()}
        decoder.update({str(token_id): entry(token, True, False)
                        for token, token_id in self.added_tokens.items()})
        config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": self.max_length,
                  **self.special_tokens, "added_tokens_decoder": decoder,
                  "clean_up_tokenization_spaces": False, "do_lower_case": True,
                  "errors": "replace"}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n",
                                                      encoding="utf-8")

    def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
        """One row per prompt: [BOS] + ids + [EOS] + padding, shape (N, max_length), int32."""
        prompts = check_prompt(prompts, name="prompts")
        shape = (len(prompts), self.max_length)  # (N, 77)
        rows = np.full(shape, self.pad_id, dtype=np.int32)
        room = self.max_length - 2
        for index, prompt in enumerate(prompts):
            ids = self.encode(prompt)
            if len(ids) > room:
                warnings.warn(
                    f"Prompt {index} has {len(ids)} tokens but only {room} fit between BOS and EOS "
                    f"(max_length={self.max_length}); the last {len(ids) - room} tokens were "
                    f"dropped: {self.decode(ids[room:])!r}",
                    UserWarning,
                    stacklevel=2,
                )
            row = [self.bos_id, *ids[:room], self.eos_id]
            rows[index, : len(row)] = row
        return rows

    def encode(self, text: str) -> list[int]:
        """BPE ids of one prompt, without BOS, EOS or padding."""
        ids = []
        for raw_piece, raw_special in _split_on(
            self.expand_prompt(text), self._raw_special_pattern, self._raw_specials
        ):
            if raw_special is not None:
                ids.append(raw_special)
                continue
            pieces = _split_on(
                normalize(raw_piece), self._normalized_special_pattern, self._normalized_specials
            )
            for piece, special in pieces:
                ids.extend([special] if special is not None else self._encode_normalized(piece))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text without special tokens; "</w>" becomes a space. Lossy: case is gone."""
        tokens = [
            self._id_to_token[int(token_id)]
            for token_id in ids
            if int(token_id) not in self.special_ids
        ]
        text = bytes(self._char_to_byte[char] for char in "".join(tokens)).decode(
            "utf-8", errors="replace"
        )
        return text.replace(END_OF_WORD, " ").strip()

    def _encode_normalized(self, text: str) -> list[int]:
        ids = []
        for clip_piece in CLIP_PATTERN.findall(text):
            for word in GPT2_PATTERN.findall(clip_piece):
                symbols = "".join(self._byte_to_char[byte] for byte in word.encode("utf-8"))
                ids.extend(self.vocab.get(token, self.unk_id) for token in self._bpe(symbols))
        return ids

    def _bpe(self, word: str) -> tuple[str, ...]:
        """Merge the lowest-ranked adjacent pair wherever it occurs, until no pair is a merge."""
        if word in self._word_cache:
            return self._word_cache[word]
        symbols = [*word[:-1], word[-1] + END_OF_WORD]
        while len(symbols) > 1:
            pairs = set(zip(symbols[:-1], symbols[1:], strict=True))
            best = min(pairs, key=lambda pair: self.merge_ranks.get(pair, float("inf")))
            if best not in self.merge_ranks:
                break
            merged, position = [], 0
            while position < len(symbols):
                if tuple(symbols[position : position + 2]) == best:
                    merged.append(symbols[position] + symbols[position + 1])
                    position += 2
                else:
                    merged.append(symbols[position])
                    position += 1
            symbols = merged
        self._word_cache[word] = tuple(symbols)
        return self._word_cache[word]

    def __repr__(self) -> str:
        return (
            f"CLIPTokenizer(vocab_size={self.vocab_size}, max_length={self.max_length}, "
            f"bos_id={self.bos_id}, eos_id={self.eos_id}, pad_id={self.pad_id})"
        )


def _alternation(tokens: dict[str, int]) -> regex.Pattern | None:
    """Longest first, so at each position the longest special token wins (as in `tokenizers`)."""
    if not tokens:
        return None
    return regex.compile(
        "(" + "|".join(regex.escape(token) for token in sorted(tokens, key=len, reverse=True)) + ")"
    )


def _split_on(
    text: str, pattern: regex.Pattern | None, token_ids: dict[str, int]
) -> list[tuple[str, int | None]]:
    """[(piece, None) for plain text, (token, id) for a special token], in order."""
    if pattern is None:
        return [(text, None)]
    parts = pattern.split(text)  # plain, special, plain, special, ..., plain
    return [
        (part, token_ids[part] if index % 2 else None) for index, part in enumerate(parts) if part
    ]


def _read_tokenizer_json(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocab and merges of a HuggingFace `tokenizers` BPE model (CLIP's "</w>" suffix)."""
    model = read_json(path, "tokenizer.json", optional=True).get("model", {})
    if model.get("type") != "BPE" or model.get("end_of_word_suffix") != "</w>":
        raise ValueError(
            f"{path} is not a CLIP BPE tokenizer (model type {model.get('type')!r}, end-of-word "
            f"suffix {model.get('end_of_word_suffix')!r}; expected 'BPE' and '</w>')."
        )
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return dict(model["vocab"]), merges


def _read_merges(path: Path) -> list[tuple[str, str]]:
    merges = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or (line_number == 1 and line.startswith("#version")):
            continue
        pair = line.split()
        if len(pair) != 2:
            raise ValueError(
                f"{path}:{line_number}: a merge is two symbols separated by a space, got {line!r}."
            )
        merges.append((pair[0], pair[1]))
    return merges


def _read_special_token_config(folder: Path) -> dict:
    """Special tokens, their `normalized` flags and model_max_length, as transformers 5 reads them.

    tokenizer_config.json comes first; special_tokens_map.json overrides it, but only in folders
    saved before `added_tokens_decoder` existed (transformers < 4.34), where SD 2 sets pad "!".
    A token is a str or a dict with "content"; when two names share one token (eos, unk and pad are
    all "<|endoftext|>") the last one transformers registers sets its `normalized` flag.
    """
    config = read_json(folder / "tokenizer_config.json", "tokenizer_config.json", optional=True)
    decoder = config.get("added_tokens_decoder")
    if decoder is None:
        config.update(read_json(folder / "special_tokens_map.json", "special_tokens_map.json",
                                 optional=True))
        decoder = {}
    decoder_flags = {entry["content"]: entry.get("normalized", False) for entry in decoder.values()}
    kwargs, flags = {"max_length": int(config.get("model_max_length", 77))}, {}
    for name, default in DEFAULT_SPECIAL_TOKENS.items():  # in transformers' registration order
        value = config.get(name) or default
        content = value["content"] if isinstance(value, dict) else str(value)
        flags[content] = decoder_flags.get(
            content, isinstance(value, dict) and value.get("normalized", False)
        )
        kwargs[name] = content
    kwargs["normalized_tokens"] = [content for content, normalized in flags.items() if normalized]
    return kwargs


def _read_added_tokens(folder: Path, special: set[str]) -> list[tuple[int, str]]:
    """``(id, content)`` of the tokens added beyond the special ones (textual inversion's), in id
    order: from tokenizer_config.json's ``added_tokens_decoder``, else tokenizer.json's
    ``added_tokens`` (transformers 5 keeps them there)."""
    config = read_json(folder / "tokenizer_config.json", "tokenizer_config.json", optional=True)
    if "added_tokens_decoder" in config:
        entries = [{"id": int(key), **value} for key, value in
                   config["added_tokens_decoder"].items()]
    else:
        entries = read_json(folder / "tokenizer.json", "tokenizer.json",
                            optional=True).get("added_tokens", [])
    return sorted((entry["id"], entry["content"]) for entry in entries
                  if entry["content"] not in special)
