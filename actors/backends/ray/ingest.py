"""The Ray ingest actor: the shared ingest stage, with batches stored once in the object
store and dispatched to the processing actors.

Transport only: :class:`~actors.ingest.stage.IngestStage` decides batches, room and ledger;
:class:`~actors.dispatch.dispatcher.Dispatcher` decides which actor gets which batch and what
a failure costs. Here a handed-on batch is ``ray.put`` once (the one copy of its pixels); a
dispatch is ``process.remote`` on a processing actor chained to ``merge.remote`` on the
results actor, so the partial goes from worker to results by reference; the merge's
acknowledgement reports the batch done, failed, or its worker dead (then it is sent again
from the object store). A batch that needs pedestal states is dispatched once the results
actor has published them, so no processing task ever waits for another batch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from actors.backends.ray.runtime import ACTOR_OPTIONS, StageNames, restarted
from actors.config import PipelineConfig
from actors.core.batch import FrameBatch
from actors.core.events import (
    Aborted,
    Action,
    Announce,
    Begin,
    Checkpoint,
    End,
    HandOn,
    PeerEnd,
    SeriesSeen,
)
from actors.core.modules import ModuleLayout, Policy
from actors.core.status import IngestStatus, Ledger
from actors.dispatch.dispatcher import Dispatcher, GiveUp, Job, Key
from actors.ingest.events import EventHandOn, ModuleEvents, ModulePart, live_status
from actors.ingest.stage import IngestStage

logger = logging.getLogger(__name__)

#: how long a stateful batch may wait for its states before it is given up
STATES_TIMEOUT = 600.0
#: bytes of a raw frame's row chunk in ``ray.put`` (below Ray's 1 MiB threshold for its
#: six-thread copy, which costs a 2-core host more CPU than the copy itself)
PUT_CHUNK = 1_000_000
#: how often the first module's ingest looks for ranges a silent module never completes (s)
MODULE_POLL = 0.25
#: why a restarted ingest fails the acquisition its predecessor had running
RESTARTED = ("the ingest actor died and was restarted; frames it held in its open batch "
             "are not counted")
#: why the ingest fails the running acquisition when the results actor dies
RESULTS_DIED = ("the results actor died and was restarted: what it had merged is lost; "
                "the frames of this acquisition are dropped as stage_failed")


@dataclass
class Stored:
    """A batch in the object store, with the chain setup it runs under."""

    batch: Any  # ObjectRef[FrameBatch]
    setup: Any  # ObjectRef[ChainSetup]


@dataclass
class StoredEvent:
    """One range of a multi-module detector: each module's batch in the object store."""

    parts: dict[str, ModuleHandOn]
    layout: ModuleLayout
    policy: Policy
    setup: Any  # ObjectRef[ChainSetup]


@dataclass(frozen=True)
class ModuleHandOn:
    """A module ingest's batch of one range, stored by that ingest, for the first one."""

    acquisition: int
    index: int
    frame_numbers: Any
    setup_version: int
    batch: Any  # ObjectRef[FrameBatch]


class Ingest:
    """The ingest actor (async): commands, the receive loop, dispatch (module doc)."""

    def __init__(self, config: PipelineConfig, names: StageNames,
                 store_budget: int | None = None, source: str | None = None) -> None:
        """``source`` names another module's stream of a multi-module detector (its ingest
        hands its batches to the first one's); None: the first (or only) stream."""
        self.names = names
        self.results = names.lookup(names.results)
        self._results_id = self.results._actor_id.hex()
        self.workers = [names.lookup(names.worker(i)) for i in range(names.workers)]
        self.source = source
        sources = config.source_names
        self.own = source or sources[0]
        self.modules: ModuleEvents[Any] | None = ModuleEvents.for_config(config) \
            if config.modular and source is None else None
        self.others = sources[1:] if self.modules is not None else []
        self.stage = IngestStage(config, self, store_budget=store_budget,
                                 module=config.modular)
        self.dispatcher: Dispatcher[Stored | StoredEvent] = Dispatcher(names.workers)
        self.setups: dict[tuple[int, int], Any] = {}  # (acquisition, version) -> ObjectRef
        self._tasks: set[asyncio.Future[Any]] = set()
        self._letting_go: list[asyncio.Future[Any]] = []  # aborts of a failed acquisition
        # open at once, also when Ray restarts this actor after its process died
        self._opening = asyncio.get_event_loop().create_task(self._open())

    # -- lifecycle ----------------------------------------------------------------------------
    async def _open(self) -> None:
        await self.stage.open()
        if self.modules is not None:
            self._spawn(self._module_timer())
        if restarted() and self.source is not None:  # another module's ingest
            logger.warning("the ingest actor of module %s was restarted", self.source)
            self._spawn(self._peer(self.names.ingest).module_restarted.remote(self.source))
        elif restarted():
            checkpoint, ended = await self.results.recall.remote()
            for other in self.others:  # what they handed to the dead one never comes back
                self._spawn(self._peer(other).forget_inflight.remote())
            await self.stage.restore(checkpoint, ended, RESTARTED)
            logger.warning("the ingest actor was restarted; it resumes from acquisition %s",
                           checkpoint.last_acquisition if checkpoint else 0)

    async def open(self) -> dict[str, Any]:
        """Wait until the actor is open; where it runs."""
        await self._opening
        return {"node_id": ray.get_runtime_context().get_node_id()}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.stage.close()

    # -- commands -----------------------------------------------------------------------------
    async def start(self, acquisition: int | None = None) -> int:
        await self._opening
        while self._letting_go:  # a failed acquisition's aborts reach every module first
            await self._letting_go.pop()
        number = await self.stage.start(acquisition)
        for other in self.others:  # the first module's ingest numbers the acquisitions
            await self._peer(other).start.remote(number)
        return number

    async def stop(self, acquisition: int) -> None:
        await self._opening
        await self.stage.stop(acquisition)
        for other in self.others:
            await self._peer(other).stop.remote(acquisition)

    async def abort(self, acquisition: int) -> None:
        await self._opening
        await self.stage.abort(acquisition)
        for other in self.others:
            await self._peer(other).abort.remote(acquisition)

    async def set(self, changes: dict[str, Any]) -> int | None:
        await self._opening
        if self.others and self.stage.status().state != "idle":
            raise RuntimeError("the runtime parameters of a multi-module detector apply "
                               "between acquisitions: stop the running one first")
        first = await self.stage.set(changes)
        for other in self.others:
            await self._peer(other).set.remote(changes)
        return first

    async def status(self) -> IngestStatus:
        await self._opening
        status = self.stage.status()
        status = replace(status, dispatch=self.dispatcher.counts(status.acquisition))
        if not self.others:
            return status
        others = {}
        for other in self.others:
            try:
                others[other] = await self._peer(other).status.remote()
            except RayActorError:  # that module's ingest is being restarted: not shown now
                continue
        return live_status(status, others, self.own, share=self.modules is not None and
                           self.modules.share)

    # -- a multi-module detector ------------------------------------------------------------
    @property
    def _kind(self) -> str:
        """What each source is: a module of the detector, or a client of its stream."""
        return "client" if self.modules is not None and self.modules.share else "module"

    def _peer(self, source: str) -> Any:
        """The ingest actor of another module (or, for those, of the first)."""
        if source == self.names.ingest:
            return self.names.lookup(self.names.ingest)
        return self.names.lookup(self.names.module_ingest(source))

    async def module_action(self, source: str, action: Any) -> None:
        """Another module's ingest action (its batches already in the object store)."""
        await self._opening
        await self._module(source, action)
        self._step()

    async def module_restarted(self, source: str) -> None:
        """Another module's ingest died (Ray restarted it, empty): the running acquisition
        cannot be assembled and fails, naming the module; every ingest lets it go."""
        await self._opening
        status = self.stage.status()
        running = self.modules.running if self.modules is not None else None
        if running is None and status.state != "idle":
            running = status.acquisition
        if running is None:
            return
        why = (f"the ingest actor of {self._kind} {source} died and was restarted; the acquisition "
               "cannot be assembled")
        logger.error("acquisition %d failed: %s", running, why)
        await self._fail_modular(Aborted(running, status.ledger or Ledger(running), why))
        self._step()

    async def _module_timer(self) -> None:
        """Ranges a silent module never completes go after ``modules.timeout`` (else a
        module with nothing to send would hold the others' parts, and their room, forever)."""
        m = self.modules
        assert m is not None
        while True:
            wait = m.wake_in()
            await asyncio.sleep(MODULE_POLL if wait is None else min(max(wait, 0.005),
                                                                      MODULE_POLL))
            events = m.due()
            if events:
                await self._module_events(events)
                self._step()

    async def _fail_modular(self, failed: Aborted) -> None:
        """A module's ingest (or a stage) died: the acquisition fails at once, everything
        the event stage holds of it goes back, and every module's ingest lets it go."""
        m = self.modules
        assert m is not None
        failed = replace(failed, ledger=m.failed_ledger(failed.acquisition, failed.ledger))
        m.discard(failed.acquisition)
        for part in m.take_refused():
            self._return_part(part.source, part.stored)
        await self._route(failed)
        # (no-op if this ingest failed it; spawned: this may run inside one of its steps)
        self._spawn(self.stage.abort(failed.acquisition))
        # every other module's ingest lets it go (the next start waits for that; not
        # awaited here: this may run while this actor opens, and their aborts call it)
        letting_go = asyncio.ensure_future(asyncio.gather(
            *(self._peer(o).abort.remote(failed.acquisition) for o in self.others),
            return_exceptions=True))
        self._letting_go.append(letting_go)
        self._spawn(letting_go)

    async def series_start(self, start: Any) -> None:
        """(A client sharing a stream) another client read the series start."""
        await self._opening
        await self.stage.series_start(start)

    async def drain(self, acquisition: int) -> None:
        """(A client sharing a stream) another client read the series end."""
        await self._opening
        await self.stage.drain(acquisition)

    def _tell_others(self, source: str, action: SeriesSeen | PeerEnd) -> None:
        """(share) what one client read of the series, for every other client."""
        for other in [self.own, *self.others]:
            if other == source:
                continue
            if other == self.own:  # (spawned: this may run inside one of its steps)
                self._spawn(self.stage.series_start(action.start)
                            if isinstance(action, SeriesSeen)
                            else self.stage.drain(action.acquisition))
            elif isinstance(action, SeriesSeen):
                self._spawn(self._peer(other).series_start.remote(action.start))
            else:
                self._spawn(self._peer(other).drain.remote(action.acquisition))

    async def forget_inflight(self) -> None:
        """(A module's ingest) the first module's ingest died with its batches: room."""
        await self._opening
        self.stage.forget_inflight()

    async def returned(self, acquisition: int, index: int) -> None:
        """(A module's ingest) its batch has left the pipeline: its room is back."""
        self.stage.returned(acquisition, index)

    async def finished(self, acquisition: int) -> None:
        """(A module's ingest) every batch of the acquisition has settled: idle again."""
        self.stage.finished(acquisition)

    async def _module(self, source: str, action: Any) -> None:
        m = self.modules
        assert m is not None
        if isinstance(action, ModuleHandOn):
            out = m.hand_on(ModulePart(source, action.index, action.frame_numbers,
                                       action, action.setup_version, action.acquisition),
                            action.acquisition)
        elif isinstance(action, Begin):
            out = m.begin(source, action)
        elif isinstance(action, End):
            out = m.end(source, action)
        elif isinstance(action, SeriesSeen | PeerEnd):
            self._tell_others(source, action)
            return
        elif action.error is not None:  # a failure (a stage died), not an abort
            await self._fail_modular(action)
            return
        else:
            out = m.aborted(source, action)
        await self._module_events(out)

    async def _module_events(self, events: list[Any]) -> None:
        m = self.modules
        assert m is not None
        for event in events:
            if isinstance(event, EventHandOn):
                stored = StoredEvent(
                    dict(event.parts), event.layout, event.policy,
                    self.setups[(event.acquisition, event.setup_version)])
                job: Job[Stored | StoredEvent] = Job(event.acquisition, event.info, stored,
                                                     needs_states=bool(event.info.keys))
                self.dispatcher.add(job)
                if job.needs_states:
                    self._spawn(self._fetch_states(job))
            else:
                await self._route(event)
        for part in m.take_refused():  # late, or of a failed acquisition
            self._return_part(part.source, part.stored)

    def _return_part(self, source: str, part: ModuleHandOn) -> None:
        """A module batch has left: the room goes back to the ingest that stored it."""
        if source == self.own:
            self.stage.returned(part.acquisition, part.index)
        else:
            self._spawn(self._peer(source).returned.remote(part.acquisition, part.index))

    # -- the transport of the ingest stage ----------------------------------------------------
    async def send(self, actions: list[Action]) -> None:
        for action in actions:
            if self.stage.core.module:  # one module of several: through the event stage
                await self._send_module(action)
                continue
            if isinstance(action, HandOn):
                self._hand_on(action)
                continue
            await self._route(action)
        self._step()

    async def _route(self, action: Any) -> None:
        """An action for the dispatcher and the results stage."""
        if isinstance(action, Begin | Announce):
            self._store_setup(action)
        event, released = self.dispatcher.route(action)
        for job in released:
            self._release(job)
        if isinstance(event, Checkpoint):  # the latest one counts: no need to wait
            self._spawn(self.results.apply.remote(event))
        elif event is not None:  # awaited: a setup is in place before its batches merge
            try:
                await self.results.apply.remote(event)
            except RayActorError as exc:
                self._results_lost(exc)

    async def _send_module(self, action: Action) -> None:
        """This module's action: its batch goes into the object store here (on the node
        that received it), the rest to the event stage in the first module's ingest."""
        if isinstance(action, HandOn):
            batch = action.batch
            item: Any = ModuleHandOn(batch.acquisition, batch.index, batch.frame_numbers,
                                     action.setup_version, _put(batch))
        elif isinstance(action, Begin | End | Aborted | SeriesSeen | PeerEnd):
            item = action
        elif isinstance(action, Checkpoint) and self.source is None:
            await self._route(action)  # the first module's ingest keeps the checkpoint
            return
        else:  # Announce (parameters apply between acquisitions), a module's checkpoint
            return
        if self.source is None:
            await self._module(self.own, item)
            return
        try:
            await self._peer(self.names.ingest).module_action.remote(self.source, item)
        except (RayActorError, ValueError) as exc:  # the first module's ingest is restarting
            logger.warning("module %s: the first module's ingest did not take %s (%s)",
                           self.source, type(item).__name__, type(exc).__name__)
            if isinstance(item, ModuleHandOn):  # it is not held anywhere: its room is free
                self.stage.returned(item.acquisition, item.index)

    def _store_setup(self, action: Begin | Announce) -> None:
        if isinstance(action, Begin):  # forget the setups nothing in flight uses
            active = self.dispatcher.active()
            self.setups = {k: v for k, v in self.setups.items() if k[0] in active}
        setup = action.setup
        self.setups[(setup.acquisition, setup.version)] = ray.put(setup)

    def _hand_on(self, action: HandOn) -> None:
        batch = action.batch
        # the one copy into the object store; the stage keeps no reference to the received
        # messages, so ZMQ frees them now, not when the batch is merged
        stored = Stored(_put(batch), self.setups[(batch.acquisition, action.setup_version)])
        job: Job[Stored | StoredEvent] = Job(batch.acquisition, action.info, stored,
                                             needs_states=bool(action.info.keys))
        self.dispatcher.add(job)
        if job.needs_states:
            self._spawn(self._fetch_states(job))

    async def _fetch_states(self, job: Job[Stored | StoredEvent]) -> None:
        ref = self.results.states.remote(job.acquisition, job.info, STATES_TIMEOUT)
        try:
            states = await ref
        except RayActorError as exc:
            self._results_lost(exc)
            return
        if states is None:  # aborted meanwhile (its release comes with the abort)
            if not self.dispatcher.is_waiting(job.key):
                return
            out = self.dispatcher.drop(job.key, f"no pedestal states after "
                                                f"{STATES_TIMEOUT:.0f} s")
            if out is not None:
                self._settle(out)
        else:
            self.dispatcher.ready(job.key, ref)  # the worker reads them from the store
        self._step()

    def _step(self) -> None:
        """Send what the dispatcher decides; finish acquisitions whose batches all left."""
        for send in self.dispatcher.dispatch():
            job = send.job
            stored = job.payload
            worker = self.workers[send.worker]
            if isinstance(stored, StoredEvent):
                partial = worker.process_event.remote(
                    stored.layout, stored.policy, job.info.index, job.states, stored.setup,
                    tuple(stored.parts), *(p.batch for p in stored.parts.values()))
            else:
                partial = worker.process.remote(stored.batch, job.states, stored.setup)
            ack = asyncio.wrap_future(
                self.results.merge.remote(job.acquisition, job.info, partial).future())
            ack.add_done_callback(functools.partial(self._answered, job.key))
        for end in self.dispatcher.ended():
            self.stage.finished(end.acquisition)  # idle before the result is visible
            for other in self.others:
                self._spawn(self._peer(other).finished.remote(end.acquisition))
            self._spawn(self.results.apply.remote(end))

    def _answered(self, key: Key, ack: asyncio.Future[Any]) -> None:
        exc = None if ack.cancelled() else ack.exception()
        died = None if exc is None else self._who_died(exc)
        if exc is None or died == "results":
            job = self.dispatcher.done(key)  # merged, or lost with the results stage
            if job is not None:
                self._release(job)
            if exc is not None:
                self._results_lost(exc)
        elif died == "worker":
            logger.warning("a processing actor failed on batch %s (%s); sending it again",
                           key, type(exc).__name__)
            for out in self.dispatcher.resend(key, f"{type(exc).__name__}: {exc}"):
                self._settle(out)
        else:
            failed = self.dispatcher.failed(key, f"{type(exc).__name__}: {exc}")
            if failed is not None:
                self._settle(failed)
        self._step()

    def _who_died(self, exc: BaseException) -> str | None:
        """The stage actor whose death an error reports ("results" or "worker"); None for
        an error in the reducers."""
        if isinstance(exc, RayTaskError) and isinstance(getattr(exc, "cause", None),
                                                       RayActorError):
            exc = exc.cause
        if not isinstance(exc, RayActorError):
            return None
        return "results" if getattr(exc, "actor_id", None) == self._results_id else "worker"

    def _results_lost(self, exc: BaseException) -> None:
        """The results actor died (Ray restarts it, empty): the running acquisition fails,
        and the new results actor gets the ingest's checkpoint."""
        logger.error("the results actor died (%s): the running acquisition fails",
                     type(exc).__name__)
        self._spawn(self.stage.fail_running(RESULTS_DIED))

    def _settle(self, out: GiveUp[Stored | StoredEvent] | Job[Stored | StoredEvent]) -> None:
        """A job that leaves without a merge: given up (merged as empty) or aborted."""
        if isinstance(out, GiveUp):
            logger.error("batch %d of acquisition %d (frames %d..%d) given up: %s",
                         out.job.info.index, out.job.acquisition, out.job.info.first_frame,
                         out.job.info.last_frame, out.error)
            self._spawn(self.results.give_up.remote(out.job.acquisition, out.job.info))
            out = out.job
        self._release(out)

    def _release(self, job: Job[Stored | StoredEvent]) -> None:
        """The batch has left: the object store may free it, the ingest has room again."""
        stored = job.payload
        job.payload = Stored(None, None)
        job.states = None
        if isinstance(stored, StoredEvent):  # each module's room, in its own ingest
            for source, part in stored.parts.items():
                self._return_part(source, part)
        else:
            self.stage.returned(job.acquisition, job.info.index)

    def _spawn(self, work: Coroutine[Any, Any, Any] | Any) -> None:
        """Own a background call: failures are logged, and close() cancels it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("ingest call failed: %s", task.exception())


def _put(batch: FrameBatch) -> Any:
    """A batch into the object store (the one copy of its pixels; large raw frames in row
    chunks, :data:`PUT_CHUNK`)."""
    return ray.put(batch.chunked(PUT_CHUNK))


IngestActor: Any = ray.remote(num_cpus=0, **ACTOR_OPTIONS)(Ingest)
