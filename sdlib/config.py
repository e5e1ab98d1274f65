"""Config dataclasses to and from plain dicts: JSON in file metadata, diffusers' config.json.

Every config (``UNetConfig``, ``VAEConfig``, ``TextEncoderConfig``, ``SchedulerConfig``) is a frozen
dataclass that mixes in :class:`Config`, so they all read and write dicts the same way: keys the
dataclass does not know are dropped (diffusers' configs carry many, saved files may hold retired
ones), missing keys take the dataclass' defaults, JSON lists become tuples.
"""

import dataclasses
import json
import os

from sdlib.errors import CheckpointError

# Written as "_diffusers_version" in exported configs: the diffusers release the export is checked
# against (tools/check_diffusers_interop.py); diffusers reads the key to apply old-format fixes.
DIFFUSERS_FORMAT_VERSION = "0.42.1"


class Config:
    """Mixin for config dataclasses: ``from_dict`` and ``to_dict``, which round-trip."""

    @classmethod
    def from_dict(cls, values: dict):
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in values.items() if key in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_json(path, what, optional=False):
    """A JSON file of a checkpoint as a dict; a CheckpointError says that ``what`` is missing
    (unless ``optional``: then a missing file reads as ``{}``) or is not valid JSON."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        if optional:
            return {}
        raise CheckpointError(f"{what} is missing: no file at {path}.")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}).") from None
