"""Which batch goes to which worker, when, and what happens when one fails (pure).

Both backends drive one :class:`Dispatcher`: the Ray ingest actor (workers are processing
actors, answers are merge acknowledgements) and the local backend's coordinator thread
(workers are processes, answers are messages). The transport reports events; the dispatcher
decides:

* a batch handed on by the ingest is a :class:`Job`; it waits until it is *ready* (the
  pedestal states it needs are published, or it needs none) and a worker has room;
* :meth:`Dispatcher.dispatch` picks workers for ready jobs: the least loaded live worker,
  ties broken round-robin by batch index; at most ``per_worker`` jobs each (None: no bound);
* a job whose worker died goes back to wait (at most ``max_attempts`` sends, never to the
  same worker right away when another one is live); a job whose reducers failed is given
  up (its frames are dropped as ``processing_failed``);
* the ingest's other events go through :meth:`Dispatcher.route`: an acquisition's end is
  held until none of its jobs is left, then released with the drops decided here
  (:meth:`Dispatcher.ended`); an abort releases its waiting jobs at once (and its jobs in
  flight when their workers answer) and carries the frames they held as ``aborted``.

Every job leaves exactly once: processed (:meth:`Dispatcher.done`), given up, or released
by an abort; its payload (an object-store batch, a shared-memory slot) is then the
transport's to free.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from actors.core.events import Aborted, End, ResultsEvent
from actors.core.merger import BatchInfo
from actors.core.status import DispatchCounts, Ledger

#: sends of one batch at most (the first and the resends after worker deaths)
MAX_ATTEMPTS = 5

P = TypeVar("P")
Key = tuple[int, int]  # (acquisition, batch index)


@dataclass
class Job(Generic[P]):
    """One batch between the ingest and its merged (or given up) partial."""

    acquisition: int
    info: BatchInfo
    payload: P  # what the transport needs to send it (again): refs, a slot
    needs_states: bool = False
    states: Any = None  # once ready: the states (or a reference to them)
    ready: bool = False
    attempts: int = 0
    worker: int | None = None
    aborted: bool = False
    last_worker: int | None = None

    @property
    def key(self) -> Key:
        return (self.acquisition, self.info.index)

    @property
    def frames(self) -> int:
        return self.info.n


@dataclass(frozen=True)
class Send(Generic[P]):
    job: Job[P]
    worker: int


@dataclass(frozen=True)
class GiveUp(Generic[P]):
    """The job's frames are dropped (``reason``); merge it as empty and free it."""

    job: Job[P]
    reason: str
    error: str


@dataclass
class _Acquisition:
    drops: Counter[str] = field(default_factory=Counter)
    end: End | None = None  # once declared


class Dispatcher(Generic[P]):
    """The dispatch state machine (see the module doc). Not thread-safe."""

    def __init__(self, workers: int, per_worker: int | None = None,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        self.per_worker = per_worker
        self.max_attempts = max_attempts
        self.live: set[int] = set(range(workers))
        self.size = workers
        self.waiting: dict[Key, Job[P]] = {}
        self.inflight: dict[Key, Job[P]] = {}
        self._acqs: dict[int, _Acquisition] = {}

    # -- from the ingest ----------------------------------------------------------------------
    def add(self, job: Job[P]) -> None:
        """A batch handed on; ``job.needs_states`` jobs wait for :meth:`ready`."""
        if job.key in self.waiting or job.key in self.inflight:
            raise ValueError(f"batch {job.key} added twice")
        job.ready = not job.needs_states
        self._acq(job.acquisition)
        self.waiting[job.key] = job

    def ready(self, key: Key, states: Any) -> None:
        """The states a waiting job needs are published (``states``: them, or a reference)."""
        job = self.waiting.get(key)
        if job is not None:
            job.states, job.ready = states, True

    def is_waiting(self, key: Key) -> bool:
        return key in self.waiting

    def drop(self, key: Key, error: str) -> GiveUp[P] | None:
        """Give up a waiting job (e.g. its states never came)."""
        job = self.waiting.pop(key, None)
        return None if job is None else self._give_up(job, "processing_failed", error)

    def needing_states(self) -> list[Job[P]]:
        """Waiting jobs whose states are not there yet, in batch order."""
        return [j for k, j in sorted(self.waiting.items()) if not j.ready]

    def route(self, event: ResultsEvent) -> tuple[ResultsEvent | None, list[Job[P]]]:
        """An ingest event on its way to the results stage: the event to hand on now (None:
        an end, held until the acquisition's jobs have left) and the jobs it frees."""
        if isinstance(event, End):
            self._acq(event.acquisition).end = event
            return None, []
        if isinstance(event, Aborted):
            reason = "aborted" if event.error is None else "stage_failed"
            released, ledger = self.abort(event.acquisition, event.ledger, reason)
            return replace(event, ledger=ledger), released
        return event, []

    def end(self, acquisition: int, batches: int, ledger: Ledger) -> None:
        """The ingest hands on no more batches of ``acquisition`` (``batches`` in all)."""
        self.route(End(acquisition, batches, ledger))

    def abort(self, acquisition: int, ledger: Ledger, reason: str = "aborted"
              ) -> tuple[list[Job[P]], Ledger]:
        """Discard the acquisition: returns its waiting jobs (free them now) and its ledger
        with every frame the dispatcher held dropped (``reason``); jobs in flight are
        returned by :meth:`done` / :meth:`failed` / :meth:`worker_lost` when their workers
        answer (free them then, merge nothing)."""
        acq = self._acqs.pop(acquisition, _Acquisition())
        released = [j for k, j in sorted(self.waiting.items()) if k[0] == acquisition]
        for job in released:
            del self.waiting[job.key]
        frames = sum(j.frames for j in released)
        for job in self.inflight.values():
            if job.acquisition == acquisition and not job.aborted:
                job.aborted = True
                frames += job.frames
        acq.drops[reason] += frames
        return released, ledger.with_drops(acq.drops)

    # -- from the workers ---------------------------------------------------------------------
    def done(self, key: Key) -> Job[P] | None:
        """The job's partial is in (Ray: merged; local: to merge unless ``job.aborted``).
        Returns the job taken out of flight (free its payload), None if unknown."""
        return self.inflight.pop(key, None)

    def failed(self, key: Key, error: str) -> GiveUp[P] | Job[P] | None:
        """The reducers failed on the job: it is given up (None if unknown; the job itself if
        its acquisition was aborted meanwhile: just free it)."""
        job = self.inflight.pop(key, None)
        if job is None or job.aborted:
            return job
        return self._give_up(job, "processing_failed", error)

    def worker_lost(self, worker: int, error: str = "worker died",
                    restarting: bool = True) -> list[GiveUp[P] | Job[P]]:
        """``worker`` died with jobs in flight: they wait to be sent again (returned: jobs
        given up after ``max_attempts`` sends, and aborted jobs to free). With
        ``restarting`` False the worker gets nothing until :meth:`worker_up`."""
        if not restarting:
            self.live.discard(worker)
        out: list[GiveUp[P] | Job[P]] = []
        for key, job in sorted(self.inflight.items()):
            if job.worker == worker:
                out.extend(self.resend(key, error))
        return out

    def resend(self, key: Key, error: str) -> list[GiveUp[P] | Job[P]]:
        """One job's worker died (Ray reports deaths per call): send it again later."""
        job = self.inflight.pop(key, None)
        if job is None:
            return []
        if job.aborted:
            return [job]
        if job.attempts >= self.max_attempts:
            return [self._give_up(job, "processing_failed",
                                  f"{error}; given up after {job.attempts} attempts")]
        job.last_worker, job.worker = job.worker, None
        self.waiting[key] = job
        return []

    def worker_up(self, worker: int) -> None:
        """A worker (re)started and takes jobs."""
        self.live.add(worker)
        self.size = max(self.size, worker + 1)

    # -- decisions ------------------------------------------------------------------------------
    def dispatch(self) -> list[Send[P]]:
        """Ready jobs to send now, in batch order, each to the least loaded live worker."""
        sends: list[Send[P]] = []
        load = Counter(j.worker for j in self.inflight.values())
        for key in sorted(self.waiting):
            job = self.waiting[key]
            if not job.ready:
                continue
            worker = self._pick(job, load)
            if worker is None:
                break
            del self.waiting[key]
            job.worker = worker
            job.attempts += 1
            self.inflight[key] = job
            load[worker] += 1
            sends.append(Send(job, worker))
        return sends

    def ended(self) -> list[End]:
        """Ends of acquisitions whose jobs have all left, with the drops decided here."""
        out = []
        for n, acq in list(self._acqs.items()):
            if acq.end is None or self.outstanding(n):
                continue
            del self._acqs[n]
            ledger = acq.end.ledger
            final = replace(ledger.with_drops(acq.drops), inflight_batches=0, pending=0)
            out.append(replace(acq.end, ledger=final))
        return out

    # -- queries --------------------------------------------------------------------------------
    def ending(self, acquisition: int) -> bool:
        """Whether the ingest has declared the acquisition's end (held here)."""
        acq = self._acqs.get(acquisition)
        return acq is not None and acq.end is not None

    def jobs(self) -> list[Job[P]]:
        """Every job waiting or in flight."""
        return [*self.waiting.values(), *self.inflight.values()]

    def active(self) -> set[int]:
        """Acquisitions with jobs waiting or in flight."""
        return {k[0] for k in (*self.waiting, *self.inflight)}

    def outstanding(self, acquisition: int) -> int:
        """Jobs of ``acquisition`` waiting or in flight."""
        return sum(1 for k in (*self.waiting, *self.inflight) if k[0] == acquisition)

    def counts(self, acquisition: int | None) -> DispatchCounts:
        """What the dispatcher adds to the acquisition's live ledger."""
        if acquisition is None:
            return DispatchCounts()
        acq = self._acqs.get(acquisition)
        return DispatchCounts(dict(acq.drops) if acq else {}, self.outstanding(acquisition))

    def load(self, worker: int) -> int:
        return sum(1 for j in self.inflight.values() if j.worker == worker)

    # -- internals ------------------------------------------------------------------------------
    def _acq(self, acquisition: int) -> _Acquisition:
        return self._acqs.setdefault(acquisition, _Acquisition())

    def _pick(self, job: Job[P], load: Counter[int | None]) -> int | None:
        room = [w for w in sorted(self.live)
                if self.per_worker is None or load[w] < self.per_worker]
        if not room:
            return None
        others = [w for w in room if w != job.last_worker]
        n = max(self.size, 1)
        return min(others or room, key=lambda w: (load[w], (w - job.info.index) % n))

    def _give_up(self, job: Job[P], reason: str, error: str) -> GiveUp[P]:
        self._acq(job.acquisition).drops[reason] += job.frames
        return GiveUp(job, reason, error)
