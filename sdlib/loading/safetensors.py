"""Reading safetensors files as numpy, without torch, and refusing pickles.

Pickled checkpoints (``.ckpt``, ``.bin``, ...) are refused whatever their name says: unpickling can
run arbitrary code. A safetensors header is checked before any tensor is read, so a truncated
download says so instead of failing somewhere inside the reader.
"""

import json
import mmap
import os
import struct

import ml_dtypes  # bfloat16 for numpy: a dependency of Keras itself
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from sdlib.config import read_json
from sdlib.errors import CheckpointError

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
CONVERT_HINT = (
    "Convert it once to safetensors in an environment with torch (only for files you trust: "
    "loading a pickle can run code): `import torch, safetensors.torch; "
    "sd = torch.load(path, map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); "
    "safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items() "
    "if hasattr(v, 'contiguous')}, 'model.safetensors')`."
)


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


def _check_header(path) -> dict:
    """Validate the safetensors header and that the data section is complete (catches truncation);
    returns the header."""
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
    return header


def read_header(path) -> dict:
    """A safetensors header, checked (tensor name -> dtype, shape, offsets; ``__metadata__``),
    without reading any tensor."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    refuse_pickle(path)
    return _check_header(path)


def read_metadata(path) -> dict:
    """The ``__metadata__`` strings of a safetensors header, without reading any tensor."""
    return read_header(path).get("__metadata__") or {}


# safetensors dtype names -> numpy, for the memory-mapped reader
NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
                "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
                "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path, mapped=False) -> dict:
    """Every tensor of a .safetensors file as numpy (fp32, fp16 and bf16 alike), without torch.

    ``mapped=True``: read-only arrays over the file mapped in memory instead of copies, for a
    caller that converts each tensor once (loading a model): nothing is read twice, and a 2 GB
    file costs no 2 GB of copies."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    refuse_pickle(path)
    header = _check_header(path)
    if mapped:
        return _mapped_tensors(path, header)
    try:
        return load_file(path)
    except (SafetensorError, ValueError, OSError) as error:
        raise CheckpointError(f"Could not read {path} as safetensors: {error}") from None


def _mapped_tensors(path, header):
    """``header``'s tensors as read-only numpy views of the mapped file (checked header)."""
    with open(path, "rb") as handle:
        (header_length,) = struct.unpack("<Q", handle.read(8))
        if os.path.getsize(path) == 8 + header_length:  # no tensor data: nothing to map
            return {key: np.zeros(info["shape"], NUMPY_DTYPES[info["dtype"]])
                    for key, info in header.items() if key != "__metadata__"}
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    tensors = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info.get("dtype") not in NUMPY_DTYPES:
            raise CheckpointError(f"{path}: tensor {key} has dtype {info.get('dtype')!r}, which "
                                  f"sdlib does not read (it reads {', '.join(NUMPY_DTYPES)}).")
        dtype = np.dtype(NUMPY_DTYPES[info["dtype"]])
        start, end = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if end - start != count * dtype.itemsize:
            raise CheckpointError(f"{path}: tensor {key} has {end - start} bytes for shape "
                                  f"{info['shape']} of {info['dtype']}; the file is corrupted.")
        tensors[key] = np.frombuffer(mapped, dtype, count,
                                     8 + header_length + start).reshape(info["shape"])
    return tensors


def read_weights(path, mapped=False) -> dict:
    """One safetensors file, or the shards its ``<path>.index.json`` lists (large files);
    ``mapped`` as in :func:`read_safetensors`."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return read_safetensors(path, mapped)
    index = read_json(path + ".index.json", "the shard index")
    state = {}
    for shard in sorted(set(index.get("weight_map", {}).values())):
        state.update(read_safetensors(os.path.join(os.path.dirname(path), shard), mapped))
    return state
