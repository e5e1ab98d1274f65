"""Many workers on Ray Data (``pip install "sdlib[ray]"``): one actor per worker holding one
pipeline, fed runs of jobs by ``map_batches``; local Ray by default, a cluster with ``address``.

Each worker is an actor of a ``map_batches`` actor pool (its size: the number of workers): with
GPUs in the cluster, one GPU each; on CPUs, an equal share of the cores (and as many threads).
Ray restarts a worker that dies and gives its unfinished run of jobs to a worker again; the driver
writes every image, so a repeated result is dropped there, never written twice. The workers send
PNG bytes back, so on a cluster only the driver needs the output folder (and every node sdlib,
Ray and the weights: a --weights path must exist on each).
"""

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import warnings

from sdlib.batch.model import ModelSpec
from sdlib.batch.render import limit_threads, render

INSTALL_HINT = 'pip install "sdlib[ray]"'
LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
USAGE_STATS = "RAY_USAGE_STATS_ENABLED"
# Ray Data's notes that the progress bars are off and when a run starts and ends (the command
# line says all that itself); in a notebook, that ipywidgets would draw Ray's own widgets; and, at
# each start, that Ray's token authentication is on (as it should be: no advice in it).
QUIET_LOGGERS = {"ray.data._internal.progress": logging.ERROR,
                 "ray.data._internal.execution.streaming_executor": logging.WARNING,
                 "ray.widgets.util": logging.WARNING,
                 "ray._private.authentication.authentication_token_setup": logging.ERROR}


def quiet_ray_logs():
    """Set ``QUIET_LOGGERS``' levels; before Ray's modules are imported, as some log then."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    # Ray Data imports tqdm.auto where tqdm is installed, and in a notebook without ipywidgets
    # tqdm warns that its widget is missing, though Ray's bars are off (above).
    warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")


def ray_available():
    quiet_ray_logs()
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


class ImageWorker:
    """A Ray Data actor: builds the pipeline once, then makes the images of each run of jobs it
    is given (a row per run: its jobs as JSON) and returns a row per image."""

    def __init__(self, model, batch_shape, threads=None):
        if threads is not None:
            limit_threads(threads)
        self.pipe = ModelSpec(**model).build()
        self.batch_shape = batch_shape

    def __call__(self, rows):
        import pyarrow as pa

        results = [result for text in rows["jobs"]
                   for result in render(self.pipe, json.loads(str(text)), self.batch_shape)]
        return pa.table({
            "id": pa.array([result["id"] for result in results], pa.string()),
            "png": pa.array([result["png"] for result in results], pa.binary()),
            "seconds": pa.array([result["seconds"] for result in results], pa.float64()),
            "worker": pa.array([result["worker"] for result in results], pa.string()),
        })


@contextlib.contextmanager
def connected(address=None):
    """Ray: the one this process is already connected to (a notebook's, a test's), else a
    local one (listening on this machine only) or the cluster at ``address``, shut down on
    leaving."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        on_terminate = signal.getsignal(signal.SIGTERM)
        start_ray(ray, address)
        if callable(on_terminate) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_terminate)  # the caller's, over the one Ray sets
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def ray_results(ray, runs, model, workers, batch_shape):
    """Yield each image's result ({id, png, seconds, worker}) as a worker finishes it; ``runs``:
    lists of jobs that share a call (``jobs.batches``)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command line draws its own
    context.print_on_execution_start = False
    resources = actor_resources(ray.cluster_resources(), workers)
    threads = resources.pop("threads")
    rows = [{"jobs": json.dumps([job.to_dict() for job in run])} for run in runs]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    images = dataset.map_batches(
        ImageWorker, fn_constructor_kwargs={"model": dataclasses.asdict(model),
                                            "batch_shape": batch_shape, "threads": threads},
        batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))), **resources)
    yield from images.iter_rows()


def import_ray():
    """Ray Data, or a clear message when it is not installed."""
    quiet_ray_logs()
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError(f"Many workers need Ray Data: {INSTALL_HINT} (or run with --workers 0, "
                          "in this process).") from None
    return ray


def start_ray(ray, address=None, **options):
    """Connect to the cluster at ``address``, or start a local Ray that listens on 127.0.0.1
    only, without a dashboard, on all of this machine's cores (``options`` for ``ray.init``)."""
    options = {"log_to_driver": False, "logging_level": "warning", **options}
    if address is not None:
        ray.init(address=address, **options)
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    options = {"num_cpus": cpus, "include_dashboard": False, **options}
    # Ray's switch for single-machine clusters (its default on macOS and Windows): the node's
    # address is the loopback one, so every server binds 127.0.0.1. Ray reads it from the
    # environment (its processes inherit it) and from a constant set when it was imported. And no
    # usage statistics are sent from a local run unless RAY_USAGE_STATS_ENABLED asks for them.
    constants = ray._private.ray_constants
    environment = {LOCAL_ONLY: "0", USAGE_STATS: os.environ.get(USAGE_STATS, "0")}
    saved = {name: os.environ.get(name) for name in environment}, constants.ENABLE_RAY_CLUSTER
    os.environ.update(environment)
    constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(**options)
    finally:
        constants.ENABLE_RAY_CLUSTER = saved[1]
        for name, value in saved[0].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def actor_resources(cluster, workers):
    """Ray resources of one worker, and its thread count: a GPU each where the cluster has them,
    else an equal share of its CPUs."""
    if cluster.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1, "threads": None}
    share = cluster.get("CPU", 1) / workers
    cpus = int(share) if share >= 1 else share
    return {"num_cpus": cpus, "threads": max(1, int(share))}


def default_workers(ray):
    """With --address and no --workers: one worker per GPU of the cluster, else per node."""
    cluster = ray.cluster_resources()
    if cluster.get("GPU", 0) >= 1:
        return int(cluster["GPU"])
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
