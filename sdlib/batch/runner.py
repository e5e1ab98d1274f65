"""A batch from start to end: read the jobs, open the output folder (what is done stays done),
make the rest in this process or on Ray workers, and write each image and its manifest line as
it arrives."""

import contextlib
import dataclasses
import time

from sdlib import __version__
from sdlib.batch import ray_engine
from sdlib.batch.jobs import batches, check_steps, read_jobs
from sdlib.batch.manifest import OutputFolder
from sdlib.batch.model import ModelSpec
from sdlib.batch.render import render


@dataclasses.dataclass
class Summary:
    """What a run did: ``made`` images, ``skipped`` (done before), ``repeated`` (results that
    arrived twice, after a worker died, and were dropped), ``missing`` (jobs still not done), in
    ``seconds``."""

    made: int
    skipped: int
    total: int
    repeated: int
    missing: int
    seconds: float


class Batch:
    """The jobs of a prompts file (or a list of ``Job``) and the folder they go to; the folder
    is locked and tidied on entering (``with Batch(...) as batch:``), so ``pending`` holds the
    jobs still to make.

    ``batch_size``: how many images of equal settings one ``text_to_image`` call makes (a
    worker pads a shorter run, so it compiles one shape); it does not change the images.
    """

    def __init__(self, prompts, out, model=None, batch_size=4):
        self.model = model or ModelSpec()
        self.jobs = read_jobs(prompts) if not isinstance(prompts, list) else prompts
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        check_steps(self.jobs, self.model.scheduler_config())
        self.identity = self.model.identity()
        self.folder = OutputFolder(out)
        self.done, self.pending = {}, []

    def __enter__(self):
        self.done = self.folder.open(self.identity)
        self.pending = [job for job in self.jobs if job.id not in self.done]
        return self

    def __exit__(self, *exc_info):
        self.folder.close()

    def run(self, workers=0, address=None, pipe=None, on_image=None):
        """Make the pending images: in this process (``workers=0``; ``pipe``: an already built
        pipeline of ``model``) or on ``workers`` Ray actors (local Ray, or the cluster at
        ``address``; None there: one per GPU). ``on_image(record, made, to_make)`` after each
        image is written."""
        started = time.perf_counter()
        skipped = len(self.jobs) - len(self.pending)
        made = repeated = 0
        runs = batches(self.pending, self.batch_size)
        by_id = {job.id: job for job in self.pending}
        with self._results(runs, workers, address, pipe) as results:
            for result in results:
                job = by_id[result["id"]]
                if job.id in self.done:
                    repeated += 1
                    continue
                self.folder.write_image(job.file_name, result["png"])
                record = self.record(job, result)
                self.folder.append(record)
                self.done[job.id] = record
                made += 1
                if on_image is not None:
                    on_image(record, made, len(self.pending))
        self.pending = [job for job in self.pending if job.id not in self.done]
        return Summary(made=made, skipped=skipped, total=len(self.jobs), repeated=repeated,
                       missing=len(self.pending), seconds=time.perf_counter() - started)

    def record(self, job, result):
        """The manifest line of a finished image."""
        return {"id": job.id, "file": job.file_name, "line": job.line, **job.settings(),
                "seed_from": job.seed_from, **self.identity, "sdlib_version": __version__,
                "seconds": round(float(result["seconds"]), 4), "worker": result["worker"],
                "png_bytes": len(result["png"])}

    @contextlib.contextmanager
    def _results(self, runs, workers, address, pipe):
        """Each image's result ({id, png, seconds, worker}) as it is made; Ray (when used) is
        connected for the run and shut down after it, however it ends."""
        batch_shape = max((len(run) for run in runs), default=1)
        if not runs:
            yield iter(())
        elif not workers and address is None:
            pipe = self.model.build() if pipe is None else pipe
            size = (pipe.img_height, pipe.img_width)
            if size != self.model.size():
                raise ValueError(f"the pipeline makes {size[0]}x{size[1]} images, the model "
                                 f"spec says {self.model.size()[0]}x{self.model.size()[1]}.")
            yield (result for run in runs for result in render(pipe, run, batch_shape))
        elif pipe is not None:
            raise ValueError("a built pipeline runs in this process only: workers=0.")
        else:
            with ray_engine.connected(address) as ray:
                workers = workers or ray_engine.default_workers(ray)
                results = ray_engine.ray_results(ray, runs, self.model, workers, batch_shape)
                try:
                    yield results
                finally:
                    results.close()


def run_batch(prompts, out, model=None, workers=0, batch_size=4, address=None, pipe=None,
              on_image=None):
    """Make every image of a prompts file that ``out`` lacks; see :class:`Batch`."""
    with Batch(prompts, out, model, batch_size) as batch:
        return batch.run(workers=workers, address=address, pipe=pipe, on_image=on_image)
