"""What the three models share: a config dataclass that ``get_config``/``from_config`` round-trip.

Keras rebuilds a model from ``get_config()`` with ``from_config`` (``keras.saving.load_model``,
cloning, ``keras.saving.deserialize_keras_object``), as keras-hub's backbones do with their long
constructor arguments. Here the constructor argument is the config dataclass, stored as a plain
dict.
"""

import keras


class ConfiguredModel(keras.Model):
    """A ``keras.Model`` whose architecture is ``self.config``, an instance of ``config_class``."""

    config_class = None  # set by each model: UNetConfig, VAEConfig, TextEncoderConfig

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got a "
                            f"{type(config).__name__}; use {self.config_class.__name__}"
                            ".from_dict(...) for a dict.")
        self.config = config

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy),
                "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(cls.config_class.from_dict(config.pop("config")), **config)
