"""The serving engine of `llada-hf serve`: continuous batching of diffusion requests.

One engine thread owns the model. Requests wait in a bounded queue; between denoising steps the engine admits waiting
requests while the rows running stay within `max_batch_size`, and steps every running request with one
`model.denoising_steps(states)` call: dense LLaDA and LLaDA-MoE requests without a key/value cache or CFG share
forward passes (one per group of similar canvas widths); the others (LLaDA 2, whose passes run against each request's
own block cache; a cache; CFG) step one after the other, interleaved, so that nobody waits for a whole request to
finish. Each request keeps its own settings, canvas and counter-based draws, so its answer is the one `model.generate`
gives it alone. A request leaves as soon as its answer is complete (its EOS, stop string or budget), its client has
gone, or its sampler is over; its answer is then decoded and returned (or its stream ended) on the engine thread,
without waiting for the rest of the batch. Past the queue, `submit` refuses with 429.

An error that leaves the device unusable (`is_fatal`, a CUDA error) kills the engine: from then on every request,
those waiting included, gets a 503 with a one-line reason at once, and `/health` answers 503. Any other error fails
the requests of the step it happened in (a request's own bad settings: that request only).
"""

from __future__ import annotations

import collections
import sys
import threading
from concurrent.futures import Future
from typing import Any, Callable

from .serve_requests import RequestError


# Errors that leave the device unusable: every later kernel fails the same way, so no request can succeed after one.
_FATAL_MARKERS = ("CUDA error", "CUBLAS_STATUS_", "CUDNN_STATUS_", "cuDNN error", "device-side assert",
                  "NCCL error", "HIP error", "illegal memory access")


def is_fatal(error: BaseException) -> bool:
    """Whether `error` means the model's engine is dead (the device is in an unrecoverable state)."""
    text = str(error)
    return any(marker in text for marker in _FATAL_MARKERS)


class EngineJob:
    """One request for the engine: `inputs`, the keyword arguments of `model.start_denoising` (its `generate`
    arguments), and `rows`, the sequences it runs (n). `complete()` says its answer is final (it then leaves before
    its sampler is over); `on_end(result, error)` runs on the engine thread when it leaves (result: what
    `generate` returns, or None when it left early); `future` then holds the same result or error."""

    def __init__(self, inputs: dict, rows: int, complete: Callable[[], bool] = lambda: False,
                 on_end: Callable[[Any, BaseException | None], None] | None = None):
        self.inputs, self.rows, self.complete, self.on_end = inputs, rows, complete, on_end
        self.cancelled = threading.Event()
        self.future: Future = Future()
        self.state = None


class BatchingEngine:
    """The model's engine (see the module's docstring). `max_batch_size`: the most rows (sequences) stepped together
    (a request with more rows than that runs alone); `max_queue`: the most requests waiting to start."""

    def __init__(self, model, max_batch_size: int = 16, max_queue: int = 256):
        self.model, self.max_batch_size, self.max_queue = model, max_batch_size, max_queue
        self.dead: str | None = None  # why the engine died
        self.waiting: collections.deque[EngineJob] = collections.deque()
        self.running: list[EngineJob] = []
        self.stopped = False
        self.wake = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="llada-engine", daemon=True)
        self.thread.start()

    # --- the server's side

    def dead_error(self) -> RequestError:
        return RequestError(503, f"the model's engine died ({self.dead}); restart llada-hf serve",
                            code="engine_dead")

    def check_alive(self) -> None:
        if self.dead is not None:
            raise self.dead_error()

    def failure(self, error: BaseException) -> RequestError:
        """The answer to a request whose generation raised `error` (not a `RequestError`); marks the engine dead when
        the error is fatal."""
        line = f"{type(error).__name__}: {' '.join(str(error).split())}"
        if is_fatal(error):
            if self.dead is None:
                self.dead = line
                print(f"llada-hf serve: the model's engine died: {line}", file=sys.stderr, flush=True)
            return self.dead_error()
        return RequestError(500, f"generation failed: {line}", code="generation_failed")

    def submit(self, job: EngineJob) -> Future:
        """Queue `job`; its `future` completes when it leaves. A full queue: `RequestError` 429 with Retry-After."""
        self.check_alive()
        with self.wake:
            if len(self.waiting) >= self.max_queue:
                raise RequestError(429, f"the server is busy: {len(self.waiting)} requests are waiting (llada-hf "
                                        f"serve --max_queue {self.max_queue}); retry in a moment",
                                   code="queue_full", headers={"Retry-After": "1"})
            self.waiting.append(job)
            self.wake.notify()
        return job.future

    def load(self) -> dict:
        """Requests running and waiting, and the rows running (for /health)."""
        with self.wake:
            return {"running": len(self.running), "waiting": len(self.waiting),
                    "rows": sum(job.rows for job in self.running)}

    def shutdown(self) -> None:
        with self.wake:
            self.stopped = True
            self.wake.notify()

    # --- the engine thread

    def _loop(self) -> None:
        while True:
            with self.wake:
                while not (self.waiting or self.running or self.stopped):
                    self.wake.wait()
                if self.stopped:
                    jobs, self.waiting = [*self.waiting, *self.running], collections.deque()
                    self.running = []
                    admitted = []
                else:
                    jobs, admitted = [], self._admit()
            for job in jobs:
                self._end(job, error=RequestError(503, "the server is shutting down", code="shutting_down"))
            if self.stopped:
                return
            for job in admitted:
                self._start(job)
            self._leave_early()
            if self.running:
                self._step_running()

    def _admit(self) -> list[EngineJob]:
        """Waiting jobs that fit next to the running rows, in arrival order (under the lock)."""
        rows = sum(job.rows for job in self.running)
        admitted = []
        while self.waiting:
            job = self.waiting[0]
            if rows and rows + job.rows > self.max_batch_size:
                break
            admitted.append(self.waiting.popleft())
            rows += job.rows
        return admitted

    def _start(self, job: EngineJob) -> None:
        if job.cancelled.is_set():
            return self._end(job)
        if self.dead is not None:
            return self._end(job, error=self.dead_error())
        try:
            job.state = self.model.start_denoising(**job.inputs)
        except Exception as error:  # noqa: BLE001 (the request's own settings, or the engine's failure)
            return self._end(job, error=error)
        with self.wake:
            self.running.append(job)

    def _leave_early(self) -> None:
        """Jobs whose client has gone or whose answer is complete leave before their sampler is over."""
        for job in [job for job in self.running if job.cancelled.is_set() or job.complete()]:
            self._remove(job)
            self._end(job)

    def _step_running(self) -> None:
        jobs = list(self.running)
        try:
            going = self.model.denoising_steps([job.state for job in jobs])
        except Exception as error:  # noqa: BLE001 (fails the step's requests; fatal ones kill the engine)
            for job in jobs:
                self._remove(job)
                self._end(job, error=self.failure(error))
            return
        for job, still in zip(jobs, going):
            if still:
                continue
            self._remove(job)
            try:
                result = self.model.finish_denoising(job.state)
            except Exception as error:  # noqa: BLE001
                self._end(job, error=error)
            else:
                self._end(job, result)

    def _remove(self, job: EngineJob) -> None:
        with self.wake:
            self.running.remove(job)

    def _end(self, job: EngineJob, result: Any = None, error: BaseException | None = None) -> None:
        job.state = None  # its tensors go now, not when the request's coroutine lets go of the job
        try:
            if job.on_end is not None:
                job.on_end(result, error)
        except Exception as failure:  # noqa: BLE001 (the job's own answer code failed: its request's error)
            error = error or failure
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
