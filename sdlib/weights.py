"""Loading PyTorch-layout safetensors checkpoints into the Keras models, strictly and without torch.

Two layouts exist in the wild: the diffusers folder (``unet/diffusion_pytorch_model.safetensors`` ...)
and the original single file (``v1-5-pruned-emaonly.safetensors`` with ``model.diffusion_model.*``
keys). Single-file keys are renamed to diffusers names (:mod:`sdlib.single_file`), then one strict loader
assigns them: every model weight must be in the file with the right shape, and every tensor in the file
must belong to the model. Pickled checkpoints are refused: unpickling can run arbitrary code.
"""

import json
import os
import struct

import numpy as np

from sdlib import layers as L

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
CONVERT_HINT = (
    "Convert it once to safetensors in an environment with torch (only for files you trust: "
    "loading a pickle can run code): `import torch, safetensors.torch; "
    "sd = torch.load(path, map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); "
    "safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items() "
    "if hasattr(v, 'contiguous')}, 'model.safetensors')`."
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupted, pickled, or not matching the model."""


def refuse_pickle(path):
    """Raise if ``path`` is (or looks like) a pickle, whatever its extension."""
    path = os.fspath(path)
    looks_pickled = path.lower().endswith(PICKLE_SUFFIXES)
    if not looks_pickled and os.path.isfile(path):
        with open(path, "rb") as handle:
            head = handle.read(2)
        # A torch zip archive starts with "PK"; a raw pickle with the PROTO opcode 0x80.
        looks_pickled = head == b"PK" or head[:1] == b"\x80"
    if looks_pickled:
        raise CheckpointError(
            f"{path} is a pickled checkpoint; sdlib loads only .safetensors files and never "
            f"unpickles. {CONVERT_HINT}"
        )


def _check_header(path):
    """Validate the safetensors header and that the data section is complete (catches truncation)."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path} is not a safetensors file: only {size} bytes long.")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > min(size - 8, 100_000_000):
            raise CheckpointError(
                f"{path} is not a valid safetensors file (its header claims {header_length} bytes, "
                f"the file has {size}). It may be truncated, corrupted, or another format."
            )
        try:
            header = json.loads(handle.read(header_length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(
                f"{path} has a corrupted safetensors header ({error}). Download it again."
            ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupted safetensors header. Download it again.")
    data_end = max(
        (info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"),
        default=0,
    )
    if 8 + header_length + data_end > size:
        raise CheckpointError(
            f"{path} is truncated: its header describes {8 + header_length + data_end} bytes but "
            f"the file has {size}. The download was probably interrupted; download it again."
        )


def read_safetensors(path) -> dict:
    """Read every tensor of a .safetensors file as numpy (fp32, fp16 and bf16 alike), without torch."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    refuse_pickle(path)
    _check_header(path)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, ValueError, OSError) as error:
        raise CheckpointError(f"Could not read {path} as safetensors: {error}") from None


def keras_weight_map(model) -> dict:
    """Map each PyTorch parameter name of ``model`` to ``(keras_variable, layout)``.

    ``layout`` says how a PyTorch tensor becomes the Keras one: "conv" (OIHW -> HWIO),
    "dense" ((out, in) -> (in, out)) or "same".
    """
    mapping = {}
    for name, layer in L.named_leaf_layers(model):
        if hasattr(layer, "kernel"):
            layout = "conv" if layer.kernel.ndim == 4 else "dense"
            mapping[f"{name}.weight"] = (layer.kernel, layout)
            if layer.bias is not None:
                mapping[f"{name}.bias"] = (layer.bias, "same")
        elif hasattr(layer, "gamma"):
            mapping[f"{name}.weight"] = (layer.gamma, "same")
            mapping[f"{name}.bias"] = (layer.beta, "same")
        else:
            mapping[f"{name}.weight"] = (layer.embeddings, "same")
    return mapping


def to_keras_layout(array, layout):
    if layout == "conv":
        return np.transpose(array, (2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O)
    if layout == "dense":
        if array.ndim == 4 and array.shape[2:] == (1, 1):  # a 1x1 conv used as a linear layer
            array = array[:, :, 0, 0]
        return array.T  # (out, in) -> (in, out)
    return array


def to_torch_layout(array, layout):
    """The inverse of ``to_keras_layout``, for exporting."""
    if layout == "conv":
        return np.transpose(array, (3, 2, 0, 1))  # (kh, kw, I, O) -> (O, I, kh, kw)
    if layout == "dense":
        return array.T
    return array


def _listing(names, limit=5):
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_state_dict(model, state_dict, component, source="checkpoint"):
    """Assign a PyTorch-named ``state_dict`` to ``model``; raise naming what does not match."""
    mapping = keras_weight_map(model)
    missing = set(mapping) - set(state_dict)
    unexpected = set(state_dict) - set(mapping)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_listing(unexpected)}")
    converted, wrong_shapes = {}, []
    for name in set(mapping) & set(state_dict):
        variable, layout = mapping[name]
        array = to_keras_layout(np.asarray(state_dict[name]), layout)
        if tuple(array.shape) != tuple(variable.shape):
            wrong_shapes.append(
                f"{name} (checkpoint {tuple(np.asarray(state_dict[name]).shape)}, model expects "
                f"{_torch_shape(variable.shape, layout)})"
            )
        converted[name] = array
    if wrong_shapes:
        problems.append(f"{len(wrong_shapes)} tensor(s) of the wrong shape: {_listing(wrong_shapes, 3)}")
    if problems:
        raise CheckpointError(
            f"The {component} weights in {source} do not match the {component} built from its "
            f"config: " + "; ".join(problems) + ". Check that the config and the weights belong "
            "to the same model."
        )
    # Convert each tensor once, and refuse non-finite ones before anything is assigned, so a bad
    # file never leaves the model half loaded.
    converted = {name: array.astype(mapping[name][0].dtype) for name, array in converted.items()}
    for name, array in converted.items():
        if not np.all(np.isfinite(array)):
            raise CheckpointError(f"{source}: tensor {name} of the {component} holds NaN or inf.")
    for name, array in converted.items():
        mapping[name][0].assign(array)


def _torch_shape(shape, layout):
    shape = tuple(shape)
    if layout == "conv":
        return (shape[3], shape[2], shape[0], shape[1])
    if layout == "dense":
        return shape[::-1]
    return shape
