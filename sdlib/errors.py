"""The errors sdlib raises for bad files, below every other module so that any of them can raise it."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupted, pickled, or not matching the model."""
