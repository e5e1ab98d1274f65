"""The compiled functions' TensorFlow call options: applied to sdlib's calls only, always
restored."""

import keras
import numpy as np
import pytest
from keras import ops

from sdlib import backend

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="TensorFlow function-call options")


def _current_rewrite_options():
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    config = config_pb2.ConfigProto()
    config.ParseFromString(context.context().function_call_options.config_proto_serialized)
    return config.graph_options.rewrite_options


def test_compiled_function_runs_with_one_grappler_round_and_restores_the_defaults():
    from tensorflow.core.protobuf import rewriter_config_pb2

    seen = []

    def double(x):
        seen.append(_current_rewrite_options().meta_optimizer_iterations)
        return x * 2

    before = _current_rewrite_options()
    compiled = backend.CompiledFunction(double, models=[], jit_compile=False)
    np.testing.assert_allclose(ops.convert_to_numpy(compiled(np.ones(3, "float32"))), [2, 2, 2])
    assert seen == [rewriter_config_pb2.RewriterConfig.ONE]  # while tracing, inside the call
    assert _current_rewrite_options() == before


def test_options_are_restored_when_the_call_fails():
    before = _current_rewrite_options()

    def fails(x):
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        backend.CompiledFunction(fails, models=[], jit_compile=False)(np.ones(3, "float32"))
    assert _current_rewrite_options() == before


def test_one_trace_per_shape_raises_no_retracing_warning(caplog):
    import logging

    compiled = backend.CompiledFunction(lambda x: x + 1, models=[], jit_compile=False)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for size in range(1, 9):  # eight shapes: TensorFlow's heuristic warns after five
            for _ in range(2):
                compiled(np.ones(size, "float32"))
    assert compiled.trace_count == 8
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
