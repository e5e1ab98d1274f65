"""sdlib's own GELU, attention, norms and upsampling agree with Keras' reference implementations."""

import keras
import numpy as np
import pytest
from keras import ops

from sdlib.models import layers as L


def test_gelu_is_the_exact_gelu():
    x = np.linspace(-8, 8, 1001, dtype=np.float32)
    expected = ops.convert_to_numpy(ops.gelu(x, approximate=False))
    np.testing.assert_allclose(ops.convert_to_numpy(L.gelu(x)), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("tokens_q, tokens_k", [(16, 16), (16, 7)])
def test_attention_matches_keras_dot_product_attention(is_causal, tokens_q, tokens_k):
    if is_causal and tokens_q != tokens_k:
        pytest.skip("causal attention is self-attention")
    rng = np.random.default_rng(0)
    heads, head_dim = 4, 8
    q = rng.standard_normal((2, tokens_q, heads * head_dim)).astype(np.float32)
    k = rng.standard_normal((2, tokens_k, heads * head_dim)).astype(np.float32)
    v = rng.standard_normal((2, tokens_k, heads * head_dim)).astype(np.float32)
    split = lambda x: x.reshape(2, -1, heads, head_dim)  # noqa: E731
    expected = ops.convert_to_numpy(ops.dot_product_attention(
        split(q), split(k), split(v), scale=head_dim ** -0.5,
        is_causal=is_causal)).reshape(2, tokens_q, -1)
    got = ops.convert_to_numpy(L.multi_head_attention(q, k, v, heads, is_causal=is_causal))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_attention_is_no_worse_than_keras(dtype):
    """On TensorFlow the logits stay in bfloat16 (float16 ones are upcast): the error
    against float32 attention must stay within that of Keras' attention, which takes its
    softmax in float32."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 64, 32)).astype(np.float32) * 3 for _ in range(3))
    reference = ops.convert_to_numpy(L.multi_head_attention(q, k, v, 4))
    half = [ops.cast(x, dtype) for x in (q, k, v)]
    got = ops.convert_to_numpy(ops.cast(L.multi_head_attention(*half, 4), "float32"))
    split = lambda x: ops.reshape(x, (1, -1, 4, 8))  # noqa: E731
    keras_half = ops.dot_product_attention(*(split(x) for x in half), scale=8 ** -0.5)
    keras_half = ops.convert_to_numpy(ops.cast(keras_half, "float32")).reshape(1, 64, 32)
    assert np.isfinite(got).all()
    assert np.abs(got - reference).mean() <= 1.1 * np.abs(keras_half - reference).mean()
    assert np.abs(got - reference).max() <= 1.1 * np.abs(keras_half - reference).max()


@pytest.mark.parametrize("shape, groups", [((2, 6, 5, 64), 32), ((1, 3, 3, 8), 2), ((2, 7, 16), 4)])
def test_group_norm_matches_keras(shape, groups):
    rng = np.random.default_rng(2)
    # a large mean: the variance must not cancel
    x = (rng.standard_normal(shape) * 3 + 50).astype(np.float32)
    ours = L.group_norm(groups, 1e-6)
    ours.build(shape)
    gamma, beta = rng.standard_normal((2, shape[-1])).astype(np.float32)
    ours.gamma.assign(gamma)
    ours.beta.assign(beta)
    # The reference in float64 (numpy): Keras' GroupNormalization on torch takes its variance as
    # E[x^2] - E[x]^2 in float32 (even for float64 inputs), which cancels at this mean (~3e-4 off).
    grouped = x.astype(np.float64).reshape(shape[0], -1, groups, shape[-1] // groups)
    mean = grouped.mean(axis=(1, 3), keepdims=True)
    variance = ((grouped - mean) ** 2).mean(axis=(1, 3), keepdims=True)
    reference = ((grouped - mean) / np.sqrt(variance + 1e-6)).reshape(shape) * gamma + beta
    np.testing.assert_allclose(ops.convert_to_numpy(ours(x)), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_layer_norm_matches_keras(dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 5, 48)) * 3 + 20).astype(np.float32)
    ours = L.layer_norm(1e-5, dtype=dtype)
    reference = keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype)
    gamma, beta = rng.standard_normal((2, 48)).astype(np.float32)
    for layer in (ours, reference):
        layer.build(x.shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    got, expected = (ops.convert_to_numpy(ops.cast(layer(x), "float32"))
                     for layer in (ours, reference))
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    assert keras.backend.standardize_dtype(ours(x).dtype) == dtype
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)


def test_upsample_repeats_each_pixel_twice_along_both_axes():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    upsample = L.Upsample2D(5)
    upsample(x)  # builds the conv
    identity = np.zeros((3, 3, 5, 5), np.float32)
    identity[1, 1] = np.eye(5)  # a 3x3 conv that passes its centre pixel through
    upsample.conv.kernel.assign(identity)
    upsample.conv.bias.assign(np.zeros(5, np.float32))
    np.testing.assert_array_equal(ops.convert_to_numpy(upsample(x)),
                                  x.repeat(2, axis=1).repeat(2, axis=2))
