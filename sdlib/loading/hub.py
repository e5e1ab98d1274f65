"""Optional download of a checkpoint from the Hugging Face Hub (needs network and huggingface_hub).

Nothing here runs for a local path; tests never reach it with a repo id.
"""

import os
import re

LICENSE_NOTICE = (
    "Stable Diffusion v1 weights are licensed under the CreativeML OpenRAIL-M license "
    "(https://huggingface.co/spaces/CompVis/stable-diffusion-license): by using them you accept "
    "its use-based restrictions."
)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NOTICE_SHOWN = set()


def resolve(path_or_repo_id, variant=None, token=None):
    """A local path as it is; a hub repo id downloaded (safetensors, configs) to the cache."""
    if not isinstance(path_or_repo_id, (str, os.PathLike)):
        raise TypeError("from_pretrained needs a folder, a .safetensors file or a hub repo id "
                        f"(str), got a {type(path_or_repo_id).__name__}.")
    path = os.fspath(path_or_repo_id)
    if os.path.exists(path):
        return path
    if not REPO_ID.match(path) or path.endswith((".safetensors", ".ckpt", ".bin")):
        raise FileNotFoundError(f"No checkpoint at {path!r}: it is neither an existing folder or "
                                "file, nor a hub repo id like 'stable-diffusion-v1-5/stable-"
                                "diffusion-v1-5'.")
    return download(path, variant=variant, token=token)


def download(repo_id, variant=None, token=None):
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(f"{repo_id!r} is not a local path, and downloading it needs "
                          "huggingface_hub: `pip install huggingface_hub`, or pass the path of a "
                          "folder you downloaded.") from None
    if repo_id not in _NOTICE_SHOWN:
        print(LICENSE_NOTICE)
        _NOTICE_SHOWN.add(repo_id)
    weights = f"*.{variant}.safetensors" if variant else "*.safetensors"
    patterns = ["*.json", "*.txt", f"unet/{weights}", f"vae/{weights}", f"text_encoder/{weights}"]
    try:
        return huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns, token=token)
    except Exception as error:  # network, auth, missing repo: all end the same way for the reader
        raise OSError(f"Could not download {repo_id!r} from the Hugging Face Hub "
                      f"({type(error).__name__}: {error}). Without network, download the folder "
                      "elsewhere and pass its path to from_pretrained; the mini-shapes preset "
                      "works offline.") from None
