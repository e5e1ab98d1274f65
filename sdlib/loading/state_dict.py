"""Assigning a PyTorch-named state dict to a Keras model: strictly, all or nothing.

Every model weight must be in the state dict with the right shape, and every tensor in it must
belong to the model; a bad file never leaves the model half loaded. Names come from the models'
attribute names (:func:`sdlib.models.layers.named_leaf_layers`), which follow diffusers and
transformers, so no table maps them. Single-file keys are renamed to these names first
(:mod:`sdlib.loading.single_file`).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ml_dtypes import finfo

from sdlib.errors import CheckpointError
from sdlib.models import layers as L


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


def torch_state_dict(model, dtype=None, prefix=""):
    """The inverse of ``load_state_dict``: the model's weights as numpy under their PyTorch names
    and layouts, ``dtype`` as stored when None."""
    tensors = {}
    for name, (variable, layout) in keras_weight_map(model).items():
        array = to_torch_layout(np.asarray(variable.numpy()), layout)
        tensors[prefix + name] = np.ascontiguousarray(array.astype(dtype or array.dtype))
    return tensors


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
        problems.append(f"{len(wrong_shapes)} tensor(s) of the wrong shape: "
                        f"{_listing(wrong_shapes, 3)}")
    if problems:
        raise CheckpointError(
            f"The {component} weights in {source} do not match the {component} built from its "
            f"config: " + "; ".join(problems) + ". Check that the config and the weights belong "
            "to the same model."
        )
    # Refuse non-finite tensors before anything is assigned, so a bad file never leaves the model
    # half loaded; then convert each tensor once, as it is assigned (no second copy of the model).
    # numpy and the backends' copies release the GIL: threads share the work (SD v1.5 on 2
    # cores: 4.1 s -> 2.1 s).
    def check(name):
        raw, target = np.asarray(state_dict[name]), np.dtype(mapping[name][0].dtype)
        narrowing = (raw.dtype.name in _EXPONENT_BITS
                     and finfo(target).max < finfo(raw.dtype).max)
        # a narrowing conversion (float32 -> float16) can overflow: check what is assigned
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
            finite = all_finite(raw.astype(target) if narrowing else raw)
        return None if finite else (f"{source}: tensor {name} of the {component} holds NaN or "
                                    f"inf" + (f" as {target.name}." if narrowing else "."))

    def assign(name):
        variable = mapping[name][0]
        variable.assign(converted[name].astype(variable.dtype))

    names = sorted(converted)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        refused = [problem for problem in pool.map(check, names) if problem]
        if refused:
            raise CheckpointError(refused[0])
        list(pool.map(assign, names))


# IEEE floats: a value is inf or NaN exactly when its exponent bits are all ones.
_EXPONENT_BITS = {"float16": (np.uint16, 0x7C00), "bfloat16": (np.uint16, 0x7F80),
                  "float32": (np.uint32, 0x7F800000), "float64": (np.uint64, 0x7FF0 << 48)}


def all_finite(array) -> bool:
    """``np.isfinite(array).all()``, read from the bits: no float pass (numpy has no fast one
    for float16 and bfloat16), about 4x quicker on a checkpoint's 1 B values."""
    array = np.asarray(array)
    if array.dtype.name not in _EXPONENT_BITS:
        return bool(np.all(np.isfinite(array)))
    bits, exponent = _EXPONENT_BITS[array.dtype.name]
    return not np.any((np.ascontiguousarray(array).view(bits) & exponent) == exponent)


def _torch_shape(shape, layout):
    shape = tuple(shape)
    if layout == "conv":
        return (shape[3], shape[2], shape[0], shape[1])
    if layout == "dense":
        return shape[::-1]
    return shape


def strip_text_model_prefix(state):
    """transformers 5 saves CLIPTextModel keys without ``text_model.``; older files have it."""
    ignored = {key for key in state if key.endswith("position_ids")}
    return {key.removeprefix("text_model."): value for key, value in state.items()
            if key not in ignored}
