"""The asyncio Tango device ``Rayline``: it maps the pipeline, and does nothing else.

Static interface (all pipelines): State (INIT starting, ON idle, RUNNING acquiring, FAULT
with the reason in Status), counters, the seed's file settings, commands. Generated per
configuration by :func:`build_device_class`: one attribute per reducer output and one
writable memorized attribute per runtime parameter (:mod:`actors.tango.declare`). For the
MOENCH reducer the names are those of the seed MoenchZmqServer.

All pushes happen on the device's event loop: from the commands and from the one
:class:`~actors.tango.live.LivePublisher` task, created in ``init_device`` and cancelled in
``delete_device``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, NoReturn

import numpy as np
from tango import AttrQuality, AttrWriteType, DevFailed, DevState, Except, GreenMode
from tango.server import Device, attribute, command, device_property

from actors.core.api import StopTimeout
from actors.core.status import Snapshot, Status
from actors.tango.declare import OutputAttr, ParameterAttr
from actors.tango.live import LivePublisher
from actors.tango.session import Session

logger = logging.getLogger(__name__)

CLASS_NAME = "Rayline"
#: the most module streams the source_* attributes show
MAX_SOURCES = 256
ABORT_TIMEOUT = 10.0
CLAIM_TIMEOUT = 2.0  # how long a command waits for a start in progress
DARK_POLL = 0.05  # record_pedestal: how often it looks whether its acquisition started
DARK_START_TIMEOUT = 30.0  # ... and how long it waits for that
DARK_CANCEL_WAIT = 5.0  # a deleted device waits this long for its dark run to stop

#: counter attribute -> Status field
COUNTERS = {"received_frames": "received", "processed_frames": "processed",
            "dropped_frames": "dropped", "lost_frames": "lost", "rejected_frames": "rejected",
            "frame_rate": "frame_rate", "processing_rate": "processing_rate",
            "acquisition": "acquisition"}
_STOP_DOC = ("stop accepting frames, wait until all are processed, publish the final "
             "results (seed name)")
_ABORT_DOC = "stop and discard the acquisition; always returns (seed name)"
_RW = AttrWriteType.READ_WRITE
_VALID = AttrQuality.ATTR_VALID
_INVALID = AttrQuality.ATTR_INVALID


def refuse(message: str, origin: str, reason: str = "Rayline_Refused") -> NoReturn:
    """Raise the DevFailed a client sees (no Python traceback in its message)."""
    Except.throw_exception(reason, message, origin)
    raise AssertionError("unreachable")  # throw_exception always raises


# -- read/write functions of the static attributes ------------------------------------------
def _counter(field: str) -> Callable[[RaylineDevice], Awaitable[Any]]:
    async def read(self: RaylineDevice) -> Any:
        return self.counter(field)
    return read


def _per_source(field: str) -> Callable[[RaylineDevice], Awaitable[Any]]:
    async def read(self: RaylineDevice) -> Any:
        st = self._status
        sources = {} if st is None else st.sources
        if field == "name":
            return list(sources)
        return [int(getattr(ledger, field)) for ledger in sources.values()]
    return read


def _setting(name: str) -> Callable[[RaylineDevice], Awaitable[Any]]:
    async def read(self: RaylineDevice) -> Any:
        return getattr(self.session, name)
    return read


def _file_setting(name: str) -> Callable[[RaylineDevice, Any], Awaitable[None]]:
    async def write(self: RaylineDevice, value: Any) -> None:
        await self.write_file_setting(name, value)
    return write


def _device_setting(name: str) -> Callable[[RaylineDevice, Any], Awaitable[None]]:
    async def write(self: RaylineDevice, value: Any) -> None:
        setattr(self.session, name, float(value))
        self.push(name, float(value))
    return write


async def _dark_run_text(self: RaylineDevice) -> str:
    return self._dark_text


async def _timings(self: RaylineDevice) -> str:
    st = self._status
    return json.dumps({} if st is None else {k: round(v, 6) for k, v in st.timings.items()})


async def _previous_file_index(self: RaylineDevice) -> int:
    return self.session.file_index - 1


class RaylineDevice(Device):  # type: ignore[misc]
    """Live results of a rayline pipeline (the generated subclass is named ``Rayline``)."""

    green_mode = GreenMode.Asyncio
    session: ClassVar[Session]

    config_file = device_property(
        dtype=str, default_value="",
        doc="pipeline configuration file (read by the standalone server at start)")

    received_frames = attribute(dtype=int, fget=_counter("received"),
                                doc="frames received in the current (else last) acquisition")
    processed_frames = attribute(dtype=int, fget=_counter("processed"),
                                 doc="frames processed (merged into the results)")
    dropped_frames = attribute(dtype=int, fget=_counter("dropped"),
                               doc="received frames not processed (overflow, failures)")
    lost_frames = attribute(dtype=int, fget=_counter("lost"),
                            doc="frames the detector sent that never arrived (gaps)")
    rejected_frames = attribute(dtype=int, fget=_counter("rejected"),
                                doc="malformed messages rejected by the receiver")
    frame_rate = attribute(dtype=float, unit="Hz", format="%.1f", fget=_counter("frame_rate"),
                           doc="frames received per second")
    processing_rate = attribute(dtype=float, unit="Hz", format="%.1f",
                                fget=_counter("processing_rate"),
                                doc="frames processed per second")
    acquisition = attribute(dtype=int, fget=_counter("acquisition"),
                            doc="number of the current (else last) acquisition; 0 before")
    dark_run = attribute(
        dtype=str, fget=_dark_run_text,
        doc="JSON: the last Jungfrau dark run (record_pedestal): state (waiting, recorded, "
            "failed), gain, acquisition, and once recorded frames, file, missing gains and "
            "warnings, or the error")
    timings = attribute(
        dtype=str, fget=_timings,
        doc="JSON: wall-clock time (s since the epoch) of each step of the running "
            "acquisition so far, else of the last one: started, first_frame, first_merged, "
            "last_frame, last_merged, closed, result (result - last_frame: the tail a scan "
            "waits for after its last frame)")
    source_names = attribute(dtype=(str,), max_dim_x=MAX_SOURCES, fget=_per_source("name"),
                             doc="a multi-module detector: its modules' stream names, in the "
                             "order of the source_* counters (empty for one stream)")
    source_received = attribute(dtype=(int,), max_dim_x=MAX_SOURCES,
                                fget=_per_source("received"),
                                doc="frames each module's stream delivered")
    source_lost = attribute(dtype=(int,), max_dim_x=MAX_SOURCES, fget=_per_source("lost"),
                            doc="frames missing from each module's numbering")
    source_rejected = attribute(dtype=(int,), max_dim_x=MAX_SOURCES,
                                fget=_per_source("rejected_total"),
                                doc="malformed messages each module's receiver rejected")
    source_dropped = attribute(dtype=(int,), max_dim_x=MAX_SOURCES,
                               fget=_per_source("dropped_total"),
                               doc="frames of each module dropped before assembly (e.g. late)")

    filename = attribute(dtype=str, access=_RW, memorized=True, hw_memorized=True,
                         fget=_setting("filename"), fset=_file_setting("filename"),
                         doc="file name prefix: {filename}_{file_index:06d}.h5 (seed)")
    filepath = attribute(dtype=str, access=_RW, memorized=True, hw_memorized=True,
                         fget=_setting("filepath"), fset=_file_setting("filepath"),
                         doc="directory of the acquisition files (seed)")
    file_index = attribute(dtype=int, access=_RW, fget=_setting("file_index"),
                           fset=_file_setting("file_index"),
                           doc="index of the next acquisition's file; +1 after each one")
    previous_file_index = attribute(dtype=int, fget=_previous_file_index,
                                    doc="file_index - 1: the last acquisition's file (seed)")
    live_period = attribute(dtype=float, access=_RW, memorized=True, hw_memorized=True,
                            unit="s", min_value=0.05, fget=_setting("live_period"),
                            fset=_device_setting("live_period"),
                            doc="seconds between live result events while acquiring")
    stop_timeout = attribute(dtype=float, access=_RW, memorized=True, hw_memorized=True,
                             unit="s", min_value=0.1, fget=_setting("stop_timeout"),
                             fset=_device_setting("stop_timeout"),
                             doc="stop_receiver waits this long for processing to finish")

    # -- lifecycle ----------------------------------------------------------------------------
    async def init_device(self) -> None:
        await super().init_device()
        self._status: Status | None = None
        self._accounted: int | None = None  # the last ended acquisition whose file counted
        self._snapshot: Snapshot | None = None
        self._failure: str | None = None
        self._shown: tuple[Any, str] | None = None
        self._pushed: dict[str, Any] = {}
        self._setup_version: int | None = None
        self._archived: dict[str, Any] = {}
        self._next_archive = 0.0
        self._sequence = 0
        self._dark_text = "{}"
        self._dark_task: asyncio.Task[None] | None = None
        self._show(DevState.INIT, "Starting: waiting for the pipeline's first status.")
        for name in ("State", "Status", *COUNTERS, "filename", "filepath", "file_index",
                     "previous_file_index", "live_period", "stop_timeout", "dark_run"):
            self.set_change_event(name, True, False)
        for name in COUNTERS:
            self.set_archive_event(name, True, False)
        for out in self.session.declarations.outputs:
            self.set_change_event(out.attr, True, False)
            self.set_data_ready_event(out.attr, True)
        for param in self.session.declarations.parameters:
            self.set_change_event(param.attr, True, False)
        self._live = LivePublisher(self.session.control, self,
                                   lambda: self.session.live_period)
        self._live.start()

    async def delete_device(self) -> None:
        task = self._dark_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, DARK_CANCEL_WAIT)
        await self._live.stop()

    # -- commands -----------------------------------------------------------------------------
    @command(doc_in="start an acquisition (seed name)")  # type: ignore[untyped-decorator]
    async def start_receiver(self) -> None:
        await self._start("start_receiver")

    @command(doc_in=_STOP_DOC)  # type: ignore[untyped-decorator]
    async def stop_receiver(self) -> None:
        await self._stop("stop_receiver")

    @command(doc_in=_ABORT_DOC)  # type: ignore[untyped-decorator]
    async def abort_receiver(self) -> None:
        await self._abort("abort_receiver")

    @command(doc_in="start an acquisition")  # type: ignore[untyped-decorator]
    async def Start(self) -> None:
        await self._start("Start")

    @command(doc_in="stop the acquisition and wait for its results")  # type: ignore[untyped-decorator]
    async def Stop(self) -> None:
        await self._stop("Stop")

    @command(doc_in="stop and discard the acquisition; always returns")  # type: ignore[untyped-decorator]
    async def Abort(self) -> None:
        await self._abort("Abort")

    @command(doc_in="the next acquisition starts with a fresh pedestal")  # type: ignore[untyped-decorator]
    async def reset_pedestal(self) -> None:
        try:
            await self.session.control.reset_pedestal()
        except Exception as exc:
            self._fail("reset_pedestal", exc)

    @command(dtype_in=int, doc_in="Jungfrau dark run of this gain: 0 (detector dark), 1 or 2 "
             "(detector forced into G1/G2)", dtype_out=int,
             doc_out="the dark run's acquisition (started when the command returns: send the "
             "dark series; the dark_run attribute says when it is recorded)")  # type: ignore[untyped-decorator]
    async def record_pedestal(self, gain: int) -> int:
        origin = "record_pedestal"
        if gain not in (0, 1, 2):
            refuse(f"{origin}: gain must be 0, 1 or 2, got {gain}", origin)
        await self._claim(origin)
        try:
            status = await self._live.poll_status()
            if status.running or (self._dark_task is not None and not self._dark_task.done()):
                refuse(f"{origin}: acquisition {status.acquisition} is running", origin)
            before = status.acquisition or 0
            self._dark_task = asyncio.get_running_loop().create_task(self._dark_run(gain))
            deadline = time.monotonic() + DARK_START_TIMEOUT
            while time.monotonic() < deadline:  # started: the client may send the series
                status = await self._live.poll_status()
                if (status.acquisition or 0) > before:
                    return int(status.acquisition or 0)
                if self._dark_task.done():
                    break
                await asyncio.sleep(DARK_POLL)
            refuse(f"{origin}: the dark run did not start: {self._dark_text}", origin)
        except DevFailed:
            raise
        except Exception as exc:
            self._fail(origin, exc)
        finally:
            self._release()
        raise AssertionError("unreachable")

    async def _dark_run(self, gain: int) -> None:
        """The dark run, owned by the device (cancelled with it)."""
        self._set_dark({"state": "waiting", "gain": gain})
        try:
            record = await self.session.control.record_pedestal(
                gain, self.session.config.acquisition_timeout)
        except asyncio.CancelledError:
            self._set_dark({"state": "failed", "gain": gain, "error": "cancelled"})
            raise
        except Exception as exc:
            logger.error("record_pedestal: dark run of G%d failed: %s", gain, exc)
            self._set_dark({"state": "failed", "gain": gain, "error": str(exc)})
            return
        self._set_dark({"state": "recorded", **dataclasses.asdict(record)})

    def _set_dark(self, value: dict[str, Any]) -> None:
        self._dark_text = json.dumps(value)
        self.push("dark_run", self._dark_text)

    @command(doc_in="push the current results to event subscribers now")  # type: ignore[untyped-decorator]
    async def update_images_events(self) -> None:
        try:
            await self._live.publish()
        except Exception as exc:
            self._fail("update_images_events", exc)

    async def _start(self, origin: str) -> None:
        s = self.session
        await self._claim(origin)
        try:
            status = await self._live.poll_status()
            if status.running:
                refuse(f"acquisition {status.acquisition} is running: stop_receiver or "
                       "abort_receiver it first", origin)
            await s.control.set_output(s.filename, s.filepath, s.file_index)
            n = await s.control.start()
            s.file_indices[n] = s.file_index
            s.fault = None
            await self._live.poll_status()  # RUNNING before the command returns
            logger.info("%s: acquisition %d started (file index %d)", origin, n, s.file_index)
        except DevFailed:
            raise
        except Exception as exc:
            self._fail(origin, exc)
        finally:
            self._release()

    async def _stop(self, origin: str) -> None:
        """One stop at a time; a stop while one waits joins it (same outcome), so a client
        whose call timed out (3 s by default) may simply call again."""
        s = self.session
        if s.stop_done is not None:
            await asyncio.shield(s.stop_done)
            return
        await self._claim(origin, stopping=True)
        done = s.stop_done = asyncio.get_running_loop().create_future()
        try:
            await self._stop_now(origin)
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            done.exception()  # retrieved: joiners re-raise it, nobody else needs to
            raise
        finally:
            s.stop_done = None
            self._release()

    async def _stop_now(self, origin: str) -> None:
        s = self.session
        try:
            status = await self._live.poll_status()
            if status.acquisition is None:
                return  # nothing has run: nothing to stop
            summary = await s.control.stop(s.stop_timeout)
            s.acquisition_ended(summary.acquisition, summary.file)
            s.fault = None
            await self._live.publish()  # the final results before the command returns
            await self._live.poll_status()
            logger.info("%s: acquisition %d %s, %d of %d frames processed", origin,
                        summary.acquisition, summary.outcome, summary.processed,
                        summary.received)
        except StopTimeout as exc:
            s.fault = (f"{origin} timed out: {exc}. Call {origin} again to keep waiting, or "
                       "abort_receiver.")
            self._update_state()
            refuse(s.fault, origin, "Rayline_StopTimeout")
        except DevFailed:
            raise
        except Exception as exc:
            self._fail(origin, exc)

    async def _abort(self, origin: str) -> None:
        """Always returns: failures are logged and shown in Status."""
        s = self.session
        try:
            await asyncio.wait_for(s.control.abort(), ABORT_TIMEOUT)
            s.fault = None
            await self._live.publish()  # its (empty) final results, then ON (not RUNNING)
            await self._live.poll_status()  # when the command returns
        except Exception as exc:
            logger.exception("%s failed", origin)
            s.fault = f"{origin} failed: {type(exc).__name__}: {exc}"
        self._update_state()
        self._live.wake()

    async def _claim(self, origin: str, stopping: bool = False) -> None:
        """Start and stop run one at a time: a stop in progress refuses the others at once
        (it may wait long), anything else is waited for (briefly)."""
        s = self.session
        if s.stopping:
            refuse(f"{origin} refused: {s.busy} is in progress (abort_receiver interrupts it)",
                   origin)
        try:
            await asyncio.wait_for(s.lock.acquire(), CLAIM_TIMEOUT)
        except TimeoutError:
            refuse(f"{origin} refused: {s.busy} is still in progress", origin)
        s.busy, s.stopping = origin, stopping
        self._update_state()

    def _release(self) -> None:
        s = self.session
        s.busy, s.stopping = None, False
        s.lock.release()
        self._update_state()
        self._live.wake()

    def _fail(self, origin: str, exc: BaseException) -> NoReturn:
        logger.error("%s failed", origin, exc_info=exc)
        self.session.fault = f"{origin} failed: {type(exc).__name__}: {exc}"
        self._update_state()
        refuse(self.session.fault, origin, "Rayline_CommandFailed")

    # -- writes ----------------------------------------------------------------------------------
    async def write_parameter(self, param: ParameterAttr, value: Any) -> None:
        try:
            pipeline_value = param.from_tango(value)
            if _same(pipeline_value, self._parameter_value(param)):
                return  # e.g. Init re-applying memorized values: nothing changes
            await self.session.control.set(param.parameter, pipeline_value)
        except (ValueError, TypeError) as exc:
            refuse(f"{param.attr} = {value!r} refused: {exc}", f"write {param.attr}",
                   "Rayline_BadValue")
        except Exception as exc:
            refuse(f"{param.attr}: the pipeline did not take the value: "
                   f"{type(exc).__name__}: {exc}", f"write {param.attr}",
                   "Rayline_CommandFailed")
        try:  # read back what the pipeline now holds (and push it)
            await self._live.poll_status()
        except Exception as exc:  # the live task reports an unreachable pipeline
            logger.warning("status after writing %s failed: %s", param.attr, exc)

    async def write_file_setting(self, name: str, value: Any) -> None:
        if self.session.unchanged(name, value):
            return  # e.g. Init re-applying memorized values during an acquisition
        status = self._status
        if status is None or status.running:
            status = await self._live.poll_status()
        if status.running:
            refuse(f"{name} can change only while no acquisition runs (State ON): the files of "
                   f"acquisition {status.acquisition} are being written; stop_receiver first",
                   f"write {name}", "Rayline_NotAllowed")
        try:
            stored = self.session.set_file_setting(name, value)
        except ValueError as exc:
            refuse(f"{name} = {value!r} refused: {exc}", f"write {name}", "Rayline_BadValue")
        self.push(name, stored)
        self.push("file_index", self.session.file_index)
        self.push("previous_file_index", self.session.file_index - 1)

    # -- reads ---------------------------------------------------------------------------------
    def counter(self, field: str) -> Any:
        st = self._status
        value = getattr(st, field) if st is not None else None
        return 0 if value is None else value

    def output(self, out: OutputAttr) -> Any:
        snap = self._snapshot
        value = None if snap is None else out.value(snap.outputs.get(out.output))
        if value is None:
            return _empty(out), time.time(), _INVALID
        return value, snap.time if snap is not None else time.time(), _VALID

    def parameter(self, param: ParameterAttr) -> Any:
        return param.to_tango(self._parameter_value(param))

    def _parameter_value(self, param: ParameterAttr) -> Any:
        """The pipeline's current value (its status), else the configured one."""
        st = self._status
        if st is not None and param.parameter in st.parameters:
            return st.parameters[param.parameter]
        return param.value

    # -- what the live publisher hands over (Sink) -------------------------------------------
    def on_status(self, status: Status) -> None:
        self._status = status
        self._failure = None
        if status.outcome is not None and not status.writing and \
                status.acquisition != self._accounted:
            # an acquisition has ended (started here, from Python or by itself) and its
            # result is in: the next one gets the index after the file it wrote, once
            self._accounted = status.acquisition
            self.session.acquisition_ended(status.acquisition, status.file)
        changed_state = self._update_state()
        self._push_counters(status, changed_state)
        if status.setup_version != self._setup_version:
            self._push_parameters(status)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._sequence += 1
        self._update_state()
        for out in self.session.declarations.outputs:
            value = out.value(snapshot.outputs.get(out.output))
            if value is None:
                continue
            try:
                self.push_change_event(out.attr, value, snapshot.time, _VALID)
                self.push_data_ready_event(out.attr, self._sequence)
            except DevFailed as exc:
                logger.warning("cannot publish %s: %s", out.attr, exc.args[0].desc)

    def on_failure(self, error: BaseException) -> None:
        self._failure = f"{type(error).__name__}: {error}"
        self._update_state()

    # -- events --------------------------------------------------------------------------------
    def push(self, name: str, value: Any) -> None:
        try:
            self.push_change_event(name, value, time.time(), _VALID)
        except DevFailed as exc:
            logger.warning("cannot push %s: %s", name, exc.args[0].desc)

    def _push_parameters(self, status: Status) -> None:
        """The parameters moved (a new setup version, whoever changed them): push them."""
        self._setup_version = status.setup_version
        for param in self.session.declarations.parameters:
            if param.parameter not in status.parameters:
                continue
            value = param.to_tango(status.parameters[param.parameter])
            if param.attr not in self._pushed or not _same(value, self._pushed[param.attr]):
                self.push(param.attr, value)
                self._pushed[param.attr] = value

    def _push_counters(self, status: Status, archive_now: bool) -> None:
        now = time.time()
        archive = archive_now or now >= self._next_archive
        for name, field in COUNTERS.items():
            value = getattr(status, field)
            value = 0 if value is None else value
            if self._pushed.get(name) != value:
                self.push_change_event(name, value, now, _VALID)
                self._pushed[name] = value
            if archive and self._archived.get(name) != value:
                self.push_archive_event(name, value, now, _VALID)
                self._archived[name] = value
        if archive:
            self._next_archive = now + self.session.live_period

    def _update_state(self) -> bool:
        state, text = self._describe()
        return self._show(state, text)

    def _show(self, state: Any, text: str) -> bool:
        if self._shown == (state, text):
            return False
        old_state = self._shown[0] if self._shown else None
        self._shown = (state, text)
        self.set_state(state)
        self.set_status(text)
        try:
            self.push_change_event("State", state)
            self.push_change_event("Status", text)
        except DevFailed:
            pass  # before init_device enabled the events
        return bool(old_state != state)

    def _describe(self) -> tuple[Any, str]:
        st, fault = self._status, self.session.fault
        if self._failure is not None:
            return DevState.FAULT, f"The pipeline does not answer: {self._failure}"
        if st is None:
            return DevState.INIT, "Starting: waiting for the pipeline's first status."
        counts = (f"{st.received} frames received, {st.processed} processed, {st.dropped} "
                  f"dropped, {st.lost} lost")
        if st.fault:
            return DevState.FAULT, f"Pipeline fault: {st.fault}. Acquisition {st.acquisition}: " \
                                   f"{counts}."
        if fault is not None:
            return DevState.FAULT, fault
        if st.running and self.session.stopping:
            return DevState.RUNNING, (f"Acquisition {st.acquisition} stopping: waiting until "
                                      f"every received frame is processed ({counts}; gives "
                                      f"up after {self.session.stop_timeout:g} s).")
        if st.running:
            return DevState.RUNNING, (f"Acquisition {st.acquisition} {st.state}: {counts} "
                                      f"({st.frame_rate:.0f} frames/s).{self._warnings()}")
        if self._snapshot is None:
            return DevState.INIT, "Starting: fetching the pipeline's results."
        if self._snapshot.running or (st.acquisition is not None and (
                self._snapshot.acquisition != st.acquisition or st.outcome is None or
                st.writing)):
            # ON only once the final results of this acquisition are readable here
            return DevState.RUNNING, (f"Acquisition {st.acquisition} finishing: publishing "
                                      f"the final results ({counts}).")
        if st.acquisition is None:
            return DevState.ON, "Idle, ready: no acquisition yet."
        return DevState.ON, (f"Idle, ready. Acquisition {st.acquisition} ended: {counts}."
                             + "".join(f"\nWARNING: {w}" for w in st.warnings))

    def _warnings(self) -> str:
        """The reducers' warnings about the live results, one line each."""
        snap = self._snapshot
        if snap is None or not snap.running or not snap.processed:
            return ""
        try:
            warnings = self.session.control.warnings(snap.outputs)
        except Exception:  # a status line must not fail
            logger.exception("reducer warnings failed")
            return ""
        return "".join(f"\nWARNING: {w}" for w in warnings)


def _same(a: Any, b: Any) -> bool:
    """Equal values (NaN equals NaN: an optional number left automatic)."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return type(a) is type(b) and bool(a == b)


def _empty(out: OutputAttr) -> Any:
    """A placeholder of the right type (sent with quality INVALID)."""
    if out.format == "scalar":
        return np.zeros((), out.dtype).item()
    if out.format == "image":
        return np.zeros((0, 0), out.dtype)
    return np.zeros(0, out.dtype)


# -- the generated class ---------------------------------------------------------------------
def _output_attribute(out: OutputAttr) -> Any:
    async def read(self: RaylineDevice) -> Any:
        return self.output(out)

    kind = bool if out.dtype == "bool" else np.dtype(out.dtype).type
    shape: dict[str, Any] = {"dtype": kind}
    if out.format == "spectrum":
        shape = {"dtype": (kind,), "max_dim_x": out.cols}
    elif out.format == "image":
        shape = {"dtype": ((kind,),), "max_dim_x": out.cols, "max_dim_y": out.rows}
    return attribute(name=out.attr, fget=read, unit=out.unit, doc=out.description, **shape)


_PARAM_DTYPE: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str,
                                 "optional_float": float, "json": str}


def _parameter_attribute(param: ParameterAttr) -> Any:
    async def read(self: RaylineDevice) -> Any:
        return self.parameter(param)

    async def write(self: RaylineDevice, value: Any) -> None:
        await self.write_parameter(param, value)

    limits = {k: v for k, v in (("min_value", param.minimum), ("max_value", param.maximum))
              if v is not None}
    doc = param.description + (" (NaN: automatic)" if param.type == "optional_float" else "")
    return attribute(name=param.attr, dtype=_PARAM_DTYPE[param.type], access=_RW,
                     memorized=True, hw_memorized=True, fget=read, fset=write,
                     unit=param.unit, doc=doc, **limits)


def build_device_class(session: Session) -> type[RaylineDevice]:
    """The ``Rayline`` device class for one server process, bound to ``session``."""
    namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": CLASS_NAME,
                                 "__doc__": RaylineDevice.__doc__, "session": session}
    for out in session.declarations.outputs:
        namespace[out.attr] = _output_attribute(out)
    for param in session.declarations.parameters:
        namespace[param.attr] = _parameter_attribute(param)
    meta: Any = type(RaylineDevice)  # tango's DeviceMeta declares the attributes
    cls: type[RaylineDevice] = meta(CLASS_NAME, (RaylineDevice,), namespace)
    return cls
