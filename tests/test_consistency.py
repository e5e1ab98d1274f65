"""Latent consistency distillation of a LoRA: the pairs of timesteps and their scalings, the
teacher's guided DDIM step and the consistency target written out by hand, and a short run that
returns the LoRA and leaves the models it was given as they were."""

import keras
import numpy as np
import pytest
from keras import ops

import sdlib
from sdlib import presets
from sdlib.mini import judge, shapes
from sdlib.sampling.lcm import LCMSampler
from sdlib.sampling.schedule import add_noise
from sdlib.training.consistency import (
    ConsistencyDistiller,
    ConsistencyPairs,
    EmaTarget,
    distill_lcm_lora,
    x0_and_eps,
)
from sdlib.training.lora import UNET_TARGETS, copy_model, enable_lora


@pytest.fixture(scope="module")
def pipe():
    return sdlib.StableDiffusion.from_preset("tiny", jit_compile=False)


def pairs(pipe, batch_size=4, guidance=(2.0, 9.0)):
    sampler = LCMSampler(pipe.components.scheduler_config)
    latents = np.random.default_rng(0).standard_normal((8, *pipe.latent_shape), np.float32)
    ids = pipe.tokenizer(["a red circle", "a blue square"] * 4)
    return ConsistencyPairs(latents, ids, pipe.tokenizer([""])[0], sampler, batch_size, 3, 0,
                            guidance), sampler


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_and_eps_invert_the_noising(prediction_type):
    rng = np.random.default_rng(1)
    x0, eps = rng.standard_normal((2, 3, 4, 4, 2), np.float32)
    alpha_bar = np.float32(0.3)
    x = add_noise(x0, eps, alpha_bar)
    output = eps if prediction_type == "epsilon" else (np.sqrt(alpha_bar) * eps
                                                       - np.sqrt(1 - alpha_bar) * x0)
    got_x0, got_eps = x0_and_eps(prediction_type, x, output, alpha_bar)
    np.testing.assert_allclose(ops.convert_to_numpy(got_x0), x0, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(got_eps), eps, atol=1e-5)


def test_pairs_are_one_skip_apart_on_the_lcm_schedule(pipe):
    data, sampler = pairs(pipe, batch_size=400)
    inputs, target = data[0]
    start, end = inputs["start"], inputs["end"]
    skip = 1000 // 50
    assert set(start) <= set(range(skip - 1, 1000, skip))  # 19, 39, ..., 999
    np.testing.assert_array_equal(end, np.maximum(start - skip, 0))
    c_skip, c_out = sampler.boundary_scalings(end)
    np.testing.assert_allclose(inputs["c_skip_end"].ravel(), c_skip, rtol=1e-6)
    np.testing.assert_allclose(inputs["c_out_end"].ravel(), c_out, rtol=1e-6)
    at_zero = end == 0
    assert at_zero.any() and np.allclose(inputs["c_skip_end"].ravel()[at_zero], 1.0)
    assert np.all((inputs["guidance"] >= 2.0) & (inputs["guidance"] <= 9.0))
    assert target.shape == inputs["noisy_latents"].shape and not target.any()
    np.testing.assert_array_equal(data[0][0]["start"], start)  # seeded: repeatable
    assert not np.array_equal(data[1][0]["start"], start)


def test_the_target_is_the_students_consistency_after_the_teachers_guided_ddim_step(pipe):
    """The distiller's output, written out with plain UNet calls: f_student(x_start, t_start)
    - f_student(DDIM_teacher(x_start -> t_end), t_end)."""
    inputs, _ = pairs(pipe)[0][0]
    config = pipe.components.scheduler_config
    student = copy_model(pipe.unet, pipe.text_encoder.config.max_position_embeddings)
    layers = enable_lora(student, 2, 2.0, UNET_TARGETS)
    rng = np.random.default_rng(3)
    for _, layer in layers:  # a LoRA that is not zero, so the student differs from the teacher
        layer.lora_kernel_b.assign(rng.normal(0, 0.05, layer.lora_kernel_b.shape))
    distiller = ConsistencyDistiller(pipe.text_encoder, pipe.unet, student, config.prediction_type)
    got = ops.convert_to_numpy(distiller(inputs))

    def numpy(tensor):
        return ops.convert_to_numpy(tensor).astype(np.float64)

    def x0_of(output, x, a):  # x0 from the model's output, as the scheduler does
        if config.prediction_type == "v_prediction":
            return np.sqrt(a) * x - np.sqrt(1 - a) * output
        return (x - np.sqrt(1 - a) * output) / np.sqrt(a)

    context = pipe.text_encoder(inputs["token_ids"])
    empty = pipe.text_encoder(inputs["empty_ids"])
    x, a_s, a_e, w = (inputs[k].astype(np.float64) for k in
                      ("noisy_latents", "alpha_start", "alpha_end", "guidance"))
    cond = numpy(pipe.unet(inputs["noisy_latents"], inputs["start"], context))
    uncond = numpy(pipe.unet(inputs["noisy_latents"], inputs["start"], empty))
    guided = uncond + w * (cond - uncond)
    x0 = x0_of(guided, x, a_s)
    eps = (x - np.sqrt(a_s) * x0) / np.sqrt(1 - a_s)
    x_end = np.sqrt(a_e) * x0 + np.sqrt(1 - a_e) * eps  # DDIM, eta = 0
    end_out = numpy(student(x_end.astype(np.float32), inputs["end"], context))
    target = inputs["c_skip_end"] * x_end + inputs["c_out_end"] * x0_of(end_out, x_end, a_e)
    start_out = numpy(student(inputs["noisy_latents"], inputs["start"], context))
    prediction = inputs["c_skip_start"] * x + inputs["c_out_start"] * x0_of(start_out, x, a_s)
    np.testing.assert_allclose(got, prediction - target, atol=2e-4)


def test_a_short_distillation_returns_the_lora_and_leaves_the_models_alone(pipe):
    before = [w.copy() for w in pipe.unet.get_weights()]
    flags = [v.trainable for v in [*pipe.unet.variables, *pipe.text_encoder.variables]]
    latents = np.random.default_rng(0).standard_normal((8, *pipe.latent_shape), np.float32)
    modules = distill_lcm_lora(pipe.text_encoder, pipe.unet, latents,
                               pipe.tokenizer(["a red circle"] * 8), pipe.tokenizer([""])[0],
                               pipe.components.scheduler_config, steps=2, rank=2, batch_size=2,
                               jit_compile=False, log_every=10)
    assert modules and {component for component, _ in modules} == {"unet"}
    assert any(np.abs(m.up).max() > 0 for m in modules.values())  # B moved off zero
    for old, new in zip(before, pipe.unet.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert flags == [v.trainable for v in [*pipe.unet.variables, *pipe.text_encoder.variables]]


def test_the_ema_target_moves_toward_the_student_by_one_minus_decay():
    student, target = keras.layers.Dense(3), keras.layers.Dense(3)
    for layer in (student, target):
        layer.build((None, 4))
        layer.enable_lora(2)
    rng = np.random.default_rng(0)
    values = {name: rng.standard_normal((2, *layer_shape)).astype(np.float32)
              for name, layer_shape in (("a", (4, 2)), ("b", (2, 3)))}
    student.lora_kernel_a.assign(values["a"][0])
    student.lora_kernel_b.assign(values["b"][0])
    target.lora_kernel_a.assign(values["a"][1])
    target.lora_kernel_b.assign(values["b"][1])
    EmaTarget([("s", student)], [("t", target)], decay=0.9).on_train_batch_end(0)
    for name, variable in (("a", target.lora_kernel_a), ("b", target.lora_kernel_b)):
        np.testing.assert_allclose(ops.convert_to_numpy(variable),
                                   0.9 * values[name][1] + 0.1 * values[name][0], rtol=1e-6)


def test_a_distillation_with_an_ema_target(pipe):
    latents = np.random.default_rng(0).standard_normal((8, *pipe.latent_shape), np.float32)
    args = (pipe.text_encoder, pipe.unet, latents, pipe.tokenizer(["a red circle"] * 8),
            pipe.tokenizer([""])[0], pipe.components.scheduler_config)
    if keras.backend.backend() == "jax":
        with pytest.raises(ValueError, match="TensorFlow or torch backend"):
            distill_lcm_lora(*args, steps=2, ema_decay=0.95)
        return
    modules = distill_lcm_lora(*args, steps=2, rank=2, batch_size=2, ema_decay=0.5,
                               jit_compile=False, log_every=10)
    assert any(np.abs(m.up).max() > 0 for m in modules.values())


def test_the_shipped_lcm_lora_draws_the_prompt_in_four_steps_at_guidance_1():
    """mini-shapes-lcm, loaded by name: 4 LCM steps without the guidance pass get the judge's
    color, shape and position right as often as the base model's 50 guided DDIM steps (the
    shipped file's bar; benchmarks/speed_quality.py measures it on 150 prompts), and no less
    often than the base model under the same 4 LCM steps (a LoRA distilled without an EMA target
    fell 17 points below it)."""
    pipe = sdlib.StableDiffusion.from_preset("mini-shapes")
    prompts = shapes.canonical_prompts(30, seed=4, held_out=False)
    the_judge = judge.ShapesJudge.from_pretrained()
    base, _ = judge.measure_adherence(pipe, prompts, judge=the_judge, seed=7, num_steps=50)
    pipe.load_lora_weights("mini-shapes-lcm")
    fast, fast_images = judge.measure_adherence(pipe, prompts, judge=the_judge, seed=7,
                                                num_steps=4, guidance_scale=1.0, sampler="lcm")
    pipe.unload_lora_weights()
    plain, plain_images = judge.measure_adherence(pipe, prompts, judge=the_judge, seed=7,
                                                  num_steps=4, guidance_scale=1.0,
                                                  sampler="lcm")
    assert presets.SHIPPED_LORAS["mini-shapes-lcm"].stat().st_size <= 2e6
    assert fast["all3"] >= base["all3"] - 0.1, (fast, base)  # 3 of 30 prompts
    assert fast["all3"] >= plain["all3"] - 0.1, (fast, plain)
    assert np.abs(fast_images.astype(int) - plain_images).mean() > 1.0  # it was applied
