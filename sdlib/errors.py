"""The errors sdlib raises for bad files: below every other module, so that any can raise them."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupted, pickled, or not fitting the model."""
