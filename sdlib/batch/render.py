"""What a worker does with a run of jobs: one ``text_to_image`` call with a seed per image, so
each image is the one a single call for its prompt and seed draws, whatever its batch."""

import io
import os
import socket
import time

from PIL import Image

from sdlib.batch.jobs import Job


def render(pipe, jobs, batch_shape):
    """PNG bytes for each job, with the seconds it took and the worker that made it.

    The jobs share their settings (``jobs.batches``); the call is padded to ``batch_shape``
    images with copies of the last job, so that a worker compiles one batch shape only.
    """
    jobs = [job if isinstance(job, Job) else Job(**job) for job in jobs]
    rows = jobs + [jobs[-1]] * (batch_shape - len(jobs))
    first = jobs[0]
    negatives = [job.negative_prompt or "" for job in rows]
    started = time.perf_counter()
    images = pipe.text_to_image(  # (B, H, W, 3) uint8
        [job.prompt for job in rows], negative_prompt=negatives if any(negatives) else None,
        num_steps=first.num_steps, guidance_scale=first.guidance_scale, sampler=first.sampler,
        seed=[job.seed for job in rows], verbose=False)
    seconds = (time.perf_counter() - started) / len(jobs)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    return [{"id": job.id, "png": encode_png(image), "seconds": seconds, "worker": worker}
            for job, image in zip(jobs, images[:len(jobs)], strict=True)]


def encode_png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def limit_threads(count):
    """Keep a CPU worker to ``count`` threads, so that workers sharing a machine do not fight
    over its cores (TensorFlow and torch; JAX sizes its pool at start-up)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(count)
            tf.config.threading.set_inter_op_parallelism_threads(count)
        except RuntimeError:  # TensorFlow already started: it keeps its pools
            pass
    elif backend == "torch":
        import torch

        torch.set_num_threads(count)
