"""Data parallelism in one process: a batch's rows split over the devices of a Keras distribution.

``keras.distribution.DataParallel`` (JAX) replicates every weight on each device of its mesh; the
pipeline then puts each input batch sharded over the mesh's batch axis (``get_data_layout``), so a
device denoises B / n of the images and XLA's SPMD partitioner (GSPMD, Xu et al. 2021) splits the
compiled step's program along the batch. The images are those of one device: every row is computed
as before, only elsewhere. TensorFlow and torch are refused with the way out: JAX here, or
``python -m sdlib batch`` (Ray), one process per device, on any backend.
"""

import keras

MULTI_DEVICE_BACKENDS = ("jax",)
OTHER_WAYS = ("run with KERAS_BACKEND=jax, or spread the images over processes (one per device "
              "or machine, any backend) with `python -m sdlib batch` (Ray)")


def pipeline_distribution(models):
    """The active ``keras.distribution`` for a pipeline built now from ``models``, or None (one
    device). Raises where sdlib cannot run it: another backend than JAX (or a ``tf.distribute``
    strategy in scope), several processes, or weights created before it was set."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy():
            raise RuntimeError(
                f"A tf.distribute strategy ({type(tf.distribute.get_strategy()).__name__}) is in "
                "scope: sdlib's compiled denoising step is a plain tf.function, which "
                "tf.distribute would not split over devices. For several devices in one "
                f"process, {OTHER_WAYS}.")
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    if backend not in MULTI_DEVICE_BACKENDS:
        raise RuntimeError(
            f"A keras.distribution ({type(distribution).__name__}) is set, but sdlib runs one on "
            f"the JAX backend only, not on {backend}. To use several devices: {OTHER_WAYS}.")
    if distribution.num_processes > 1:
        raise RuntimeError(
            f"This keras.distribution spans {distribution.num_processes} processes; sdlib shards "
            "a batch over the devices of one process. For several machines: `python -m sdlib "
            "batch` (Ray).")
    _check_weights_on_mesh(distribution, models)
    return distribution


def _check_weights_on_mesh(distribution, models):
    """Weights made before the distribution was set live on one device: a compiled call that mixes
    them with sharded inputs fails in JAX with "incompatible devices"; say what to do instead."""
    mesh_devices = set(distribution.device_mesh.backend_mesh.devices.flat)
    for model in models:
        for variable in model.variables:
            if set(variable.value.sharding.device_set) != mesh_devices:
                raise RuntimeError(
                    f"The weight {variable.path!r} is not laid out on the devices of the active "
                    f"{type(distribution).__name__}: the models were built before it was set. "
                    "Set it first, then build the pipeline: keras.distribution.set_distribution("
                    "keras.distribution.DataParallel()) (or `with distribution.scope():`), then "
                    "StableDiffusion.from_preset(...).")


def batch_shards(distribution):
    """How many parts a batch is split into: the size of the mesh's batch axis (1: no
    distribution)."""
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)]


def check_batch(distribution, batch_size):
    """Each device takes an equal share of the images, so ``batch_size`` must divide evenly."""
    shards = batch_shards(distribution)
    if batch_size % shards:
        lower, higher = batch_size // shards * shards, -(-batch_size // shards) * shards
        choices = f"{lower} or {higher}" if lower else f"{higher}"
        raise ValueError(
            f"batch_size={batch_size} does not split evenly over the {shards} devices of the "
            f"active {type(distribution).__name__}: use a multiple of {shards} ({choices}), or "
            "run without the distribution.")


def shard_batch(tensor, distribution, batch_axis=0):
    """``tensor`` with its rows along ``batch_axis`` split over the mesh's batch axis, everything
    else whole (``distribution.get_data_layout`` for an axis that need not be the first). Unchanged
    without a distribution, and where the rows do not divide evenly (every device then computes
    all of them: a text encoding of one prompt)."""
    shards = batch_shards(distribution)
    if shards == 1 or tensor.shape[batch_axis] % shards:
        return tensor
    axes = [None] * len(tensor.shape)
    axes[batch_axis] = distribution.batch_dim_name
    layout = keras.distribution.TensorLayout(axes, distribution.device_mesh)
    return keras.distribution.distribute_tensor(tensor, layout)
