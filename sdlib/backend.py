"""Compiling a function of Keras models for whichever backend Keras runs on.

TensorFlow: ``tf.function`` (with XLA when ``jit_compile``). JAX: ``jax.jit`` of a stateless version that
takes the weights as arguments, so 1 B parameters are not baked into the program as constants. torch:
eager under ``no_grad``. Every compiled function counts its traces, so tests can prove that changing a
prompt, seed, guidance scale or step count does not recompile.
"""

import keras


class CompiledFunction:
    """``fn(*tensors)`` compiled for the active backend; ``trace_count`` says how often it was traced."""

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
            self._call = tf.function(traced, jit_compile=jit_compile, autograph=False)
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

            def eager(*args):
                with torch.no_grad():
                    return traced(*args)

            self._call = eager

    def __call__(self, *args):
        return self._call(*args)


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)
