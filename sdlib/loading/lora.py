"""LoRA files (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): read, check
and turn them into weight deltas for sdlib's models.

A LoRA module holds ``down`` (rank r, PyTorch ``lora_A``) and ``up`` (``lora_B``); the layer's
weight becomes ``W + scale * (alpha / r) * up @ down`` (Hu et al., Sec. 4.1), for linear layers and
1x1 and 3x3 convolutions alike (for a conv, ``down`` is itself a conv with the layer's kernel and
``up`` a 1x1 conv, so the delta is ``einsum("or,rikl->oikl")``). Two file formats carry SD v1
adapters, both read here (diffusers reads the same; ``diffusers.loaders.lora_conversion_utils``):

- diffusers / PEFT: ``unet.<module>.lora_A.weight`` / ``lora_B.weight`` and
  ``text_encoder.<module>...``; alpha and per-module rank or alpha patterns in the header's
  ``__metadata__["lora_adapter_metadata"]`` (JSON, ``unet.`` / ``text_encoder.`` prefixed keys), as
  diffusers' ``save_lora_weights`` writes them; without metadata alpha = rank;
- kohya / A1111: ``lora_unet_<module with "." -> "_">.lora_down.weight`` / ``.lora_up.weight`` /
  ``.alpha`` and ``lora_te_<...>`` for the text encoder; a file without any ``.alpha`` has
  alpha = rank, and a module without one in a file that has some takes the file's most common alpha
  (as diffusers' ``get_peft_kwargs`` does).

Module names are the models' own (they follow diffusers and transformers), so kohya names are
matched by spelling each of the model's layers the kohya way, not by renaming rules. Anything this
cannot read exactly (LoHa, LoKr, DoRA, rsLoRA, SDXL or SD 2.x adapters, keys that match no layer)
is refused by name: an adapter applied in part would give other images than the author's.
"""

import collections
import json
import os
import re
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import save_file

from sdlib.errors import CheckpointError
from sdlib.loading.safetensors import read_metadata, read_safetensors
from sdlib.loading.state_dict import keras_weight_map, to_keras_layout

COMPONENTS = ("unet", "text_encoder")
KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder"}
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
UNSUPPORTED = (  # (what a key contains, the kind of adapter it belongs to)
    ("hada_", "LoHa (LyCORIS)"), ("lokr_", "LoKr (LyCORIS)"), ("dora_scale", "DoRA"),
    ("lora_magnitude_vector", "DoRA"), ("lora_te2_", "SDXL (a second text encoder)"),
    ("text_encoder_2.", "SDXL (a second text encoder)"), ("oft_", "OFT (LyCORIS)"),
    ("diff_b", "a full-weight diff (LyCORIS)"),
)
# What the width of a layer's input says about the model an adapter was made for.
TEXT_WIDTHS = {768: "SD v1", 1024: "SD 2.x", 1280: "SDXL"}
CROSS_ATTENTION_WIDTHS = {768: "SD v1", 1024: "SD 2.x", 2048: "SDXL"}


@dataclass(frozen=True)
class LoraModule:
    """One layer's low-rank update, in PyTorch layout: ``down`` (r, in) or (r, in, kh, kw),
    ``up`` (out, r) or (out, r, 1, 1), float32."""

    down: np.ndarray
    up: np.ndarray
    alpha: float

    @property
    def rank(self):
        return self.down.shape[0]

    def delta(self):
        """``(alpha / r) * up @ down`` in the base weight's PyTorch layout, float32."""
        up = self.up.reshape(self.up.shape[0], self.rank)  # (out, r)
        down = self.down.reshape(self.rank, -1)  # (r, in * kh * kw)
        delta = (up @ down).reshape(up.shape[0], *self.down.shape[1:])  # (out, in[, kh, kw])
        return delta * np.float32(self.alpha / self.rank)


@dataclass(frozen=True)
class LoraFile:
    """A read adapter: ``modules`` maps (component, module name) to its update."""

    path: str
    format: str  # "peft" or "kohya"
    modules: dict


def read_lora_file(path) -> LoraFile:
    """Read a LoRA ``.safetensors`` file of either format; nothing is checked against a model yet
    (:func:`lora_deltas` does that)."""
    path = os.fspath(path)
    if not path.lower().endswith(".safetensors"):
        suffix = os.path.splitext(path)[1] or "(no suffix)"
        raise CheckpointError(
            f"{path}: LoRA files are read from .safetensors only (got {suffix}); sdlib never "
            "unpickles. Convert a trusted .pt/.bin once in an environment with torch: "
            "`safetensors.torch.save_file(torch.load(path, weights_only=True), "
            "'lora.safetensors')`."
        )
    state = read_safetensors(path)  # refuses pickles whatever their name, checks the header
    metadata = read_metadata(path)
    for marker, kind in UNSUPPORTED:
        keys = [key for key in state if marker in key]
        if keys:
            raise CheckpointError(
                f"{path} is a {kind} adapter (e.g. key {keys[0]!r}); sdlib loads plain LoRA for "
                "SD v1 only (lora_A/lora_B or lora_down/lora_up)."
            )
    if any(key.startswith(tuple(KOHYA_PREFIXES)) for key in state):
        return LoraFile(path, "kohya", _kohya_modules(state, path))
    if any(key.startswith(("unet.", "text_encoder.")) for key in state):
        return LoraFile(path, "peft", _peft_modules(state, metadata, path))
    raise CheckpointError(
        f"{path} is not a LoRA file sdlib knows: its keys ({_listing(state)}) start with neither "
        "unet. / text_encoder. (diffusers, PEFT) nor lora_unet_ / lora_te_ (kohya, A1111)."
    )


def save_lora_file(modules, path, metadata=None):
    """Write ``{(component, module): LoraModule}`` in diffusers' PEFT format, as its
    ``save_lora_weights`` does: ``<component>.<module>.lora_A/B.weight`` (float32) and, per
    component, a LoraConfig in the header (``r``, ``lora_alpha`` and an ``alpha_pattern`` for
    modules whose alpha differs), so diffusers and sdlib read the same alpha back.
    ``metadata``: more header strings (e.g. what the adapter teaches)."""
    state, packed = {}, {}
    for component in COMPONENTS:
        mine = {module: update for (part, module), update in modules.items() if part == component}
        if not mine:
            continue
        ranks = collections.Counter(update.rank for update in mine.values())
        alphas = collections.Counter(update.alpha for update in mine.values())
        rank, alpha = ranks.most_common(1)[0][0], alphas.most_common(1)[0][0]
        packed.update({
            f"{component}.r": rank, f"{component}.lora_alpha": alpha,
            # Full module names: a PEFT pattern matches a name's end at a "." boundary.
            f"{component}.rank_pattern": {m: u.rank for m, u in mine.items() if u.rank != rank},
            f"{component}.alpha_pattern": {m: u.alpha for m, u in mine.items()
                                           if u.alpha != alpha},
            f"{component}.target_modules": sorted(mine), f"{component}.use_dora": False,
            f"{component}.use_rslora": False,
        })
        for module, update in mine.items():
            state[f"{component}.{module}.lora_A.weight"] = np.ascontiguousarray(update.down)
            state[f"{component}.{module}.lora_B.weight"] = np.ascontiguousarray(update.up)
    header = {"format": "pt", METADATA_KEY: json.dumps(packed, sort_keys=True),
              **(metadata or {})}
    save_file(state, os.fspath(path), metadata=header)


def _float32(array):
    return np.asarray(array).astype(np.float32)


def _peft_modules(state, metadata, path):
    configs = _peft_configs(metadata, path)
    modules, unknown = {}, []
    pairs = collections.defaultdict(dict)
    for key, array in state.items():
        match = re.fullmatch(r"(unet|text_encoder)\.(.+)\.lora_([AB])\.weight", key)
        if match is None:
            unknown.append(key)
            continue
        component, module, which = match.groups()
        pairs[component, module][which] = _float32(array)
    if unknown:
        raise CheckpointError(
            f"{path}: {len(unknown)} key(s) are not LoRA weights sdlib can apply: "
            f"{_listing(unknown)} (a lora_B bias or an old attention-processor layout?)."
        )
    for (component, module), pair in pairs.items():
        _check_pair(pair, f"{component}.{module}", path)
        down, up = pair["A"], pair["B"]
        config = configs.get(component)
        if config is None:  # no metadata: PEFT's scale 1, alpha = rank (diffusers' convention)
            alpha = float(down.shape[0])
        else:
            rank = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8))
            if rank != down.shape[0]:
                raise CheckpointError(
                    f"{path}: {component}.{module} has rank {down.shape[0]} but the file's "
                    f"metadata says {rank}; the file is inconsistent."
                )
            alpha = _pattern_value(config.get("alpha_pattern") or {}, module,
                                   config.get("lora_alpha", 8))
        modules[component, _strip_text_model(component, module)] = LoraModule(down, up, alpha)
    return modules


def _peft_configs(metadata, path):
    """The per-component LoraConfig keys that diffusers stored in the header, if it did."""
    if METADATA_KEY not in metadata:
        return {}
    try:
        packed = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{path}: unreadable {METADATA_KEY} in its header ({error})."
        ) from None
    configs = {}
    for component in COMPONENTS:
        prefix = component + "."
        config = {key[len(prefix):]: value for key, value in packed.items()
                  if key.startswith(prefix)}
        if not config:
            continue
        for flag, kind in (("use_dora", "DoRA"), ("use_rslora", "rsLoRA")):
            if config.get(flag):
                raise CheckpointError(f"{path} is a {kind} adapter ({component}.{flag} is true "
                                      "in its metadata); sdlib loads plain LoRA only.")
        configs[component] = config
    return configs


def _pattern_value(pattern, module, default):
    """PEFT's rank_pattern / alpha_pattern lookup (``peft.utils.other.get_pattern_key``): the first
    key that matches the end of the module name, at a "." boundary."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _kohya_modules(state, path):
    pairs = collections.defaultdict(dict)
    unknown = []
    for key, array in state.items():
        match = re.fullmatch(r"(lora_(?:unet|te1?)_[^.]+)\.(lora_(?:down|up)\.weight|alpha)", key)
        if match is None:
            unknown.append(key)
            continue
        name, which = match.groups()
        pairs[name][which.split(".")[0]] = _float32(array)
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} key(s) are not kohya LoRA weights: "
                              f"{_listing(unknown)}.")
    alphas = [float(pair["alpha"].reshape(())) for pair in pairs.values() if "alpha" in pair]
    common_alpha = collections.Counter(alphas).most_common(1)[0][0] if alphas else None
    modules = {}
    for name, pair in pairs.items():
        _check_pair({"A": pair.get("lora_down"), "B": pair.get("lora_up")}, name, path)
        down, up = pair["lora_down"], pair["lora_up"]
        if "alpha" in pair:
            alpha = float(pair["alpha"].reshape(()))
        else:
            alpha = float(down.shape[0]) if common_alpha is None else common_alpha
        prefix = next(prefix for prefix in sorted(KOHYA_PREFIXES, key=len, reverse=True)
                      if name.startswith(prefix))
        # Resolved against the model's layers in lora_deltas: "_" is ambiguous on its own.
        modules[KOHYA_PREFIXES[prefix], "kohya:" + name[len(prefix):]] = LoraModule(down, up, alpha)
    return modules


def _check_pair(pair, name, path):
    missing = [which for which in ("A", "B") if pair.get(which) is None]
    if missing:
        label = {"A": "down (lora_A)", "B": "up (lora_B)"}
        raise CheckpointError(f"{path}: {name} has no {' or '.join(label[m] for m in missing)} "
                              "weight; the file is incomplete.")
    down, up = pair["A"], pair["B"]
    if down.ndim not in (2, 4) or up.ndim != down.ndim or up.shape[1] != down.shape[0]:
        raise CheckpointError(f"{path}: {name} has down {down.shape} and up {up.shape}, which do "
                              "not make a low-rank pair.")


def _strip_text_model(component, module):
    """Real files say ``text_model.encoder...``; transformers 5 (and sdlib) say ``encoder...``."""
    return module.removeprefix("text_model.") if component == "text_encoder" else module


def kohya_name(module):
    """How kohya spells one of sdlib's layer names (dots become underscores)."""
    return module.replace(".", "_")


def lora_deltas(lora, models):
    """Each adapted weight's delta, in Keras layout, float32: ``{(component, weight name): delta}``.

    ``models`` maps "unet" and "text_encoder" to sdlib's models. Raises, naming them, for modules
    that match no layer or whose shapes do not fit (saying which base model the file seems made
    for); nothing is assigned here.
    """
    deltas, unmatched, wrong = {}, [], []
    maps = {component: keras_weight_map(model) for component, model in models.items()}
    kohya = {component: _kohya_lookup(mapping) for component, mapping in maps.items()}
    for (component, module), update in lora.modules.items():
        if module.startswith("kohya:"):
            spelled = module.removeprefix("kohya:")
            if component == "text_encoder":
                spelled = spelled.removeprefix("text_model_")
            module = kohya[component].get(spelled, spelled)
        entry = maps[component].get(f"{module}.weight")
        if entry is None or entry[1] == "same":  # no such layer, or a norm / embedding
            unmatched.append(f"{component}.{module}")
            continue
        variable, layout = entry
        delta = update.delta()  # PyTorch layout
        if layout == "conv" and delta.ndim == 2:  # made for a linear proj_in, here a 1x1 conv
            delta = delta[:, :, None, None]
        delta = to_keras_layout(delta, layout)
        if tuple(delta.shape) != tuple(variable.shape):
            wrong.append((component, module, update, tuple(variable.shape), delta.shape))
            continue
        deltas[component, f"{module}.weight"] = delta
    if unmatched:
        raise CheckpointError(
            f"{lora.path}: {len(unmatched)} LoRA module(s) match no linear or conv layer of this "
            f"pipeline: {_listing(unmatched)}. {_made_for(lora)}"
        )
    if wrong:
        component, module, update, expected, got = wrong[0]
        raise CheckpointError(
            f"{lora.path}: {len(wrong)} LoRA module(s) do not fit this pipeline's layers, e.g. "
            f"{component}.{module} (its update has Keras shape {tuple(got)}, the layer "
            f"{expected}). {_made_for(lora)}"
        )
    return deltas


def _kohya_lookup(mapping):
    names = {name.removesuffix(".weight") for name, (_, layout) in mapping.items()
             if name.endswith(".weight") and layout != "same"}
    return {kohya_name(name): name for name in names}


def _made_for(lora):
    """A guess at the base model from the input width of text-encoder or cross-attention layers."""
    for (component, module), update in lora.modules.items():
        width = update.down.shape[1]
        if component == "text_encoder" and re.search(r"q_proj$", module) and width in TEXT_WIDTHS:
            return f"It seems made for {TEXT_WIDTHS[width]} (text width {width})."
        if component == "unet" and re.search(r"attn2[._]to_k$", module):
            guess = CROSS_ATTENTION_WIDTHS.get(width, "another model")
            return f"It seems made for {guess} (cross-attention width {width})."
    return "Check that the adapter was made for this base model."


def _listing(names, limit=4):
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class LoraStack:
    """The adapters merged into a pipeline's models, and a copy of every base weight they touch.

    Each weight's value is always ``base + sum(scale * delta)`` over the active adapters, computed
    in float32 from the kept base copy and then cast: scales can change any number of times without
    drift, and unloading assigns the copy back, bit for bit. Only variables' values change, never
    their shapes, so no compiled function traces again.
    """

    def __init__(self, models):
        self.models = models  # {"unet": ..., "text_encoder": ...}
        self.deltas = {}  # adapter name -> {(component, weight name): delta}
        self.scales = {}  # adapter name -> scale (0 when switched off)
        self.base = {}  # (component, weight name) -> the original value, in the variable's dtype
        self.paths = {}  # adapter name -> file

    def add(self, name, lora, scale):
        if name in self.deltas:
            raise ValueError(f"An adapter named {name!r} is loaded already (loaded: "
                             f"{', '.join(self.deltas)}); pass another adapter_name, or call "
                             "unload_lora_weights() first.")
        deltas = lora_deltas(lora, self.models)  # raises before anything changes
        self.deltas[name], self.scales[name], self.paths[name] = deltas, float(scale), lora.path
        try:
            self._merge(deltas.keys())
        except BaseException:
            for table in (self.deltas, self.scales, self.paths):
                del table[name]
            self._merge(deltas.keys())
            raise

    def set_scales(self, scales):
        unknown = sorted(set(scales) - set(self.deltas))
        if unknown:
            loaded = ", ".join(self.deltas) or "none"
            raise ValueError(f"No adapter named {', '.join(map(repr, unknown))}; loaded: {loaded}.")
        for name, scale in scales.items():
            if not np.isfinite(float(scale)):
                raise ValueError(f"The scale of {name!r} must be a finite number, got {scale!r}.")
        self.scales = {name: float(scales.get(name, 0.0)) for name in self.deltas}
        self._merge({key for deltas in self.deltas.values() for key in deltas})

    def unload(self):
        maps = {component: keras_weight_map(model) for component, model in self.models.items()}
        for (component, weight), value in self.base.items():
            maps[component][weight][0].assign(value)
        self.deltas, self.scales, self.base, self.paths = {}, {}, {}, {}

    def _merge(self, keys):
        maps = {component: keras_weight_map(model) for component, model in self.models.items()}
        for component, weight in keys:
            variable = maps[component][weight][0]
            if (component, weight) not in self.base:
                self.base[component, weight] = np.array(variable.numpy())
            base = self.base[component, weight]
            total = base.astype(np.float32)
            for name, deltas in self.deltas.items():
                if (component, weight) in deltas and self.scales[name] != 0.0:
                    total = total + np.float32(self.scales[name]) * deltas[component, weight]
            variable.assign(total.astype(base.dtype))
