"""Compiling a function of Keras models for whichever backend Keras runs on.

TensorFlow: ``tf.function`` (with XLA when ``jit_compile``). JAX: ``jax.jit`` of a stateless version
that takes the weights as arguments, so 1 B parameters are not baked into the program as constants.
torch: eager under ``no_grad`` (``jit_compile`` has no effect there). Every compiled function counts
its traces, so tests can prove that changing a prompt, seed, guidance scale or step count does not
recompile.
"""

import contextlib

import keras


class CompiledFunction:
    """``fn(*tensors)`` compiled for the active backend; ``trace_count``: how often it traced."""

    def __init__(self, fn, models, jit_compile=True):
        self.fn = fn
        self.jit_compile = jit_compile
        self.trace_count = 0
        backend = keras.backend.backend()

        def traced(*args):
            self.trace_count += 1
            return fn(*args)

        if backend == "tensorflow":
            import tensorflow as tf

            # autograph=False: the compiled functions hold no Python control flow on tensors (loops
            # are ops.fori_loop), and skipping autograph's source conversion cuts tracing by ~20%.
            function = tf.function(traced, jit_compile=jit_compile, autograph=False)
            # One trace per input shape is the design (trace_count is tested): TensorFlow's
            # "N out of the last M calls triggered retracing" heuristic would only warn a reader
            # of a chapter that decodes batches of several sizes.
            function._omit_frequent_tracing_warning = True
            self.tf_function = function  # for inspection: its traced graph, its size
            options = inference_call_options()

            def call(*args):
                with function_call_options(options):
                    return function(*args)

            self._call = call
        elif backend == "jax":
            import jax

            variables = [variable for model in models for variable in model.variables]

            def stateless(values, *args):
                with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                    return traced(*args)

            compiled = jax.jit(stateless)
            self._call = lambda *args: compiled([variable.value for variable in variables], *args)
        else:
            import torch

            # Eager: nothing is traced. A first call with new input shapes or dtypes (what would
            # make TensorFlow or JAX trace again) counts as a trace: trace_count means the same.
            signatures = set()

            def eager(*args):
                signature = tuple((tuple(getattr(arg, "shape", ())),
                                   str(getattr(arg, "dtype", type(arg)))) for arg in args)
                with torch.no_grad():
                    if signature in signatures:
                        return fn(*args)
                    signatures.add(signature)
                    return traced(*args)

            self._call = eager

    def __call__(self, *args):
        return self._call(*args)


def inference_call_options():
    """TensorFlow function-call options that make a forward-only graph's first call cheaper.

    On its first call TensorFlow's graph optimiser (Grappler) rewrites the function: by default two
    rounds of every pass, including a memory optimiser that plans recomputation for training. For
    SD v1.5's guided step that is ~1.6 s on a 2-core CPU. Here: one round, no memory optimiser and,
    on a CPU (channels-last already), no layout optimiser; the passes that make the graph faster
    (constant folding, arithmetic simplification, the fusions of the remapper) all still run. The
    first call of the 512x512 step gets ~0.7 s shorter; the warm step is unchanged.

    The options are TensorFlow's thread-local ``FunctionCallOptions`` (internal API, stable since
    TF 2.0); ``None`` if they are unavailable, and functions then run with TensorFlow's defaults.
    """
    try:
        import tensorflow as tf
        from tensorflow.core.protobuf import rewriter_config_pb2
        from tensorflow.python.eager import context

        config = context.context().config
        context.FunctionCallOptions  # noqa: B018 (present?)
    except (ImportError, AttributeError):
        return None
    config.allow_soft_placement = True  # TensorFlow's default for functions
    rewrites = config.graph_options.rewrite_options
    rewrites.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    rewrites.memory_optimization = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
    if not tf.config.list_logical_devices("GPU"):
        rewrites.layout_optimizer = rewriter_config_pb2.RewriterConfig.OFF
    return context.FunctionCallOptions(config_proto=config)


@contextlib.contextmanager
def function_call_options(options):
    """Run TensorFlow functions called inside with ``options`` (this thread only)."""
    if options is None:
        yield
        return
    from tensorflow.python.eager import context

    ctx = context.context()
    previous = ctx.function_call_options
    ctx.function_call_options = options
    try:
        yield
    finally:
        ctx.function_call_options = previous


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)
