"""The ``rayline`` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from actors.logs import Progress, setup_logging
from actors.wire.model import Image, Protocol, SeriesEnd

logger = logging.getLogger("actors.cli")

DEFAULT_PORTS = {Protocol.SLS: 30001, Protocol.DECTRIS_V1: 9999, Protocol.DECTRIS_V2: 31001}
DEFAULT_DETECTOR = {Protocol.SLS: "moench", Protocol.DECTRIS_V1: "eiger",
                    Protocol.DECTRIS_V2: "eiger"}


def _default_endpoint(protocol: Protocol, host: str = "127.0.0.1") -> str:
    return f"tcp://{host}:{DEFAULT_PORTS[protocol]}"


def _socket_for(protocol: Protocol) -> str:
    return "sub" if protocol is Protocol.SLS else "pull"


# -- simulate -------------------------------------------------------------------------------
def _add_simulate(sub: Any) -> None:
    p = sub.add_parser("simulate", help="send realistic detector frames (MOENCH, Jungfrau, "
                       "EIGER) over sls (PUB) or DECTRIS V1/V2 (PUSH)",
                       description="Bind a PUB (sls) or PUSH (DECTRIS) socket and send a "
                       "series of synthetic frames, deterministic for a seed.")
    p.add_argument("--protocol", type=Protocol, choices=list(Protocol), default=Protocol.SLS,
                   help="wire protocol")
    p.add_argument("--detector", choices=["moench", "jungfrau", "eiger"],
                   help="scene (default: moench for sls, eiger for DECTRIS)")
    p.add_argument("--endpoint", help="bind address (default tcp://127.0.0.1:30001 for sls, "
                   ":9999 for dectris-v1, :31001 for dectris-v2; port * = any free port)")
    p.add_argument("-n", "--frames", type=int, default=1000, help="frames per series")
    p.add_argument("--series", type=int, default=1, help="number of series to send")
    p.add_argument("--rate", type=float, default=0.0,
                   help="frames/s (0 = as fast as the socket takes them)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same frames)")
    p.add_argument("--pool", type=int, default=0,
                   help="reuse this many distinct frames cyclically (fast, still deterministic)")
    p.add_argument("--mode", choices=["pumpprobe", "dark", "photons"],
                   help="MOENCH content: pump-probe (default), dark (pedestal run), photons; "
                   "Jungfrau: photons (default) or dark")
    p.add_argument("--forced-gain", type=int, choices=[0, 1, 2], dest="forced_gain",
                   help="Jungfrau dark run (--mode dark): the gain the pixels are forced into")
    p.add_argument("--spot-photons", type=float, dest="spot_photons",
                   help="Jungfrau: photons per pixel at the centre of a bright spot (drives "
                   "the pixels into G1/G2)")
    p.add_argument("--rows", type=int, help="frame rows (default: the detector's)")
    p.add_argument("--cols", type=int, help="frame columns (default: the detector's)")
    p.add_argument("--dtype", help="EIGER pixel type: uint8, uint16 or uint32")
    p.add_argument("--compression", choices=["bslz4", "lz4", "none"], default="bslz4",
                   help="DECTRIS V2 compression")
    p.add_argument("--v1-encoding", choices=["<", "lz4<", "bs8-lz4<", "bs16-lz4<", "bs32-lz4<"],
                   help="DECTRIS V1 encoding (default bsN-lz4< for the pixel size)")
    p.add_argument("--header-detail", choices=["all", "basic", "none"], default="basic",
                   help="DECTRIS series-start detail level")
    p.add_argument("--reorder", choices=["none", "moench03"], default="none",
                   help="sls: send MOENCH03 frames in the raw ADC order of sls <= 7")
    p.add_argument("--wait-subscribers", type=int, default=1,
                   help="PUB: wait for this many subscribers before sending (0 = don't)")
    p.add_argument("--lossless", action="store_true",
                   help="PUB: block instead of dropping frames for slow subscribers")
    p.add_argument("--modules", type=_grid, metavar="ROWSxCOLS",
                   help="sls: a multi-module detector, one PUB stream per module (e.g. 2x2; "
                   "streams bind the endpoint's port and the next ones)")
    p.add_argument("--lose", action="append", default=[], metavar="MODULE:FRAME[,FRAME]",
                   help="with --modules: frames a module does not send (repeatable)")
    p.add_argument("--clients", type=int, metavar="N",
                   help="DECTRIS: deal the series to N PULL clients, one PUSH socket each "
                   "(the endpoint's port and the next ones), as one PUSH socket deals to N "
                   "connected clients (sources of role share)")
    p.add_argument("--start-to", type=int, default=0, metavar="K",
                   help="with --clients: the client that gets the series start")
    p.add_argument("--end-to", type=int, default=0, metavar="K",
                   help="with --clients: the client that gets the series end")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=cmd_simulate)


def _grid(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxCOLS, e.g. 2x2") from None
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least one row and one column")
    return rows, cols


def _losses(items: list[str]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for item in items:
        module, _, frames = item.partition(":")
        try:
            out.setdefault(int(module), []).extend(int(f) for f in frames.split(",") if f)
        except ValueError:
            raise ValueError(f"--lose {item!r} is not MODULE:FRAME[,FRAME]") from None
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    from actors.sim.simulator import Simulator, SimulatorSettings

    protocol = Protocol(args.protocol)
    scene: dict[str, Any] = {k: getattr(args, k) for k in ("rows", "cols", "dtype", "mode",
                                                           "forced_gain", "spot_photons")
                             if getattr(args, k) is not None}
    detector: Any = args.detector or DEFAULT_DETECTOR[protocol]
    total = 0
    with_progress = not args.no_progress
    for series in range(args.series):
        settings = SimulatorSettings(
            protocol=protocol, detector=detector,
            endpoint=args.endpoint or _default_endpoint(protocol), frames=args.frames,
            rate=args.rate, seed=args.seed + series, pool=args.pool, series_id=series + 1,
            scene=scene, compression=None if args.compression == "none" else args.compression,
            v1_encoding=args.v1_encoding, header_detail=args.header_detail,
            reorder=args.reorder, wait_subscribers=args.wait_subscribers if series == 0 else 0,
            lossless=args.lossless)
        if args.modules is not None:
            _simulate_modules(settings, args, series)
            continue
        if args.clients is not None:
            _simulate_clients(settings, args, series)
            continue
        if args.lose:
            raise ValueError("--lose needs --modules")
        with Simulator(settings) as sim:
            if series == 0:
                print(f"simulate: {protocol} {detector} {sim.geometry.rows}x"
                      f"{sim.geometry.cols} {sim.geometry.dtype} on {sim.endpoint}",
                      file=sys.stderr, flush=True)
            progress = Progress(f"series {series + 1}", enabled=with_progress)
            total += sim.run(progress)
            progress.finish()
    return 0


def _simulate_modules(settings: Any, args: argparse.Namespace, series: int) -> None:
    from actors.sim.modules import ModuleSettings, ModuleSimulator

    if settings.protocol is not Protocol.SLS:
        raise ValueError("--modules needs --protocol sls")
    with ModuleSimulator(ModuleSettings(settings, args.modules, _losses(args.lose))) as sim:
        if series == 0:
            print(f"simulate: {settings.detector} {args.modules[0]}x{args.modules[1]} modules "
                  f"of {sim.part_shape[0]}x{sim.part_shape[1]} on "
                  f"{' '.join(sim.endpoints)}", file=sys.stderr, flush=True)
        progress = Progress(f"series {series + 1}", enabled=not args.no_progress)
        sim.run(progress)
        progress.finish()


def _simulate_clients(settings: Any, args: argparse.Namespace, series: int) -> None:
    from actors.sim.share import ShareSettings, ShareSimulator

    if settings.protocol is Protocol.SLS:
        raise ValueError("--clients needs a DECTRIS protocol (dectris-v1 or dectris-v2)")
    share = ShareSettings(settings, args.clients, args.start_to, args.end_to)
    with ShareSimulator(share) as sim:
        if series == 0:
            print(f"simulate: {settings.protocol} {settings.detector} dealt to {args.clients} "
                  f"clients on {' '.join(sim.endpoints)}", file=sys.stderr, flush=True)
        progress = Progress(f"series {series + 1}", enabled=not args.no_progress)
        sim.run(progress)
        progress.finish()


# -- receive --------------------------------------------------------------------------------
def _add_receive(sub: Any) -> None:
    p = sub.add_parser("receive", help="receive a stream without Ray and print its ledger",
                       description="Connect a SUB (sls) or PULL (DECTRIS) socket, decode every "
                       "message and print the ledger (received, rejected by reason, lost).")
    p.add_argument("endpoint", nargs="?", help="detector endpoint (default per protocol)")
    p.add_argument("--protocol", type=Protocol, choices=list(Protocol), default=Protocol.SLS,
                   help="wire protocol")
    p.add_argument("--socket", choices=["sub", "pull"], help="default: sub for sls, else pull")
    p.add_argument("--frames", type=int, default=0, help="stop after this many frames")
    p.add_argument("--series", type=int, default=1,
                   help="stop after this many end-of-series messages (0 = never)")
    p.add_argument("--idle-timeout", type=float, default=0.0,
                   help="stop after this many seconds without a message")
    p.add_argument("--decode", action="store_true", help="also decompress every frame")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=cmd_receive)


def cmd_receive(args: argparse.Namespace) -> int:
    protocol = Protocol(args.protocol)
    ledger = asyncio.run(_receive(
        args.endpoint or _default_endpoint(protocol), args.socket or _socket_for(protocol),
        protocol, frames=args.frames, series=args.series, idle_timeout=args.idle_timeout,
        decode=args.decode, progress=Progress("receive", enabled=not args.no_progress)))
    print(json.dumps(ledger, indent=2))
    return 0


async def _receive(endpoint: str, socket: Any, protocol: Protocol, *, frames: int, series: int,
                   idle_timeout: float, decode: bool, progress: Progress,
                   on_ready: Callable[[], None] | None = None) -> dict[str, Any]:
    from actors.stream.receiver import Receiver, ReceiverSettings
    from actors.wire.pixels import decode_pixels

    ends = 0
    async with Receiver(ReceiverSettings(endpoint, socket, protocol)) as rx:
        if on_ready is not None:
            on_ready()
        while True:
            msg = await rx.recv(timeout=idle_timeout or None)
            if msg is None:
                break
            if isinstance(msg, Image):
                if decode:
                    for payload in msg.channels.values():
                        decode_pixels(payload)
                progress(rx.ledger.received)
                if frames and rx.ledger.received >= frames:
                    break
            elif isinstance(msg, SeriesEnd):
                ends += 1
                if series and ends >= series:
                    break
        progress.finish()
        return rx.ledger.snapshot()


# -- record / replay ------------------------------------------------------------------------
def _add_record(sub: Any) -> None:
    p = sub.add_parser("record", help="capture a live stream to a file (raw bytes + times)",
                       description="Connect to a stream and write every multipart message, "
                       "as raw bytes with its arrival time, to a new .rlrec file.")
    p.add_argument("endpoint")
    p.add_argument("-o", "--output", required=True, help="file to create (never overwritten)")
    p.add_argument("--socket", choices=["sub", "pull"], default="sub",
                   help="how to connect to the stream")
    p.add_argument("--protocol", default="", help="protocol name stored in the file header")
    p.add_argument("--messages", type=int, default=0, help="stop after N messages")
    p.add_argument("--duration", type=float, default=0.0, help="stop after N seconds")
    p.add_argument("--idle-timeout", type=float, default=0.0,
                   help="stop after N seconds without a message")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=cmd_record)


def cmd_record(args: argparse.Namespace) -> int:
    from actors.record.recording import record

    progress = Progress("record", unit="messages", enabled=not args.no_progress)
    n = record(args.endpoint, args.socket, args.output, max_messages=args.messages,
               duration=args.duration, idle_timeout=args.idle_timeout, protocol=args.protocol,
               on_message=progress)
    progress.finish()
    print(f"recorded {n} messages to {args.output}", file=sys.stderr)
    return 0


def _add_replay(sub: Any) -> None:
    p = sub.add_parser("replay", help="play a recording back onto a socket",
                       description="Bind a PUB or PUSH socket and send a recording (.rlrec, "
                       "or a dranspose/MAX IV .cbors dump, also inside a .zip).")
    p.add_argument("file")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:30001", help="bind address")
    p.add_argument("--socket", choices=["pub", "push"], default="pub",
                   help="socket to send from")
    p.add_argument("--rate", type=float, default=None,
                   help="messages/s (default: the recorded timing; 0 = as fast as possible)")
    p.add_argument("--loop", type=int, default=1, help="play the file this many times")
    p.add_argument("--wait-subscribers", type=int, default=1,
                   help="wait for this many subscribers before sending (pub)")
    p.add_argument("--no-end", action="store_true",
                   help="send the recording as it is, even when it stops inside a series "
                   "(by default its protocol's end-of-series message follows, so the "
                   "receiving acquisition ends)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from actors.record.recording import replay

    progress = Progress("replay", unit="messages", enabled=not args.no_progress)
    n = replay(args.file, args.endpoint, args.socket, rate=args.rate, loop=args.loop,
               end=not args.no_end,
               wait_subscribers=args.wait_subscribers,
               on_bound=lambda ep: print(f"replay: {args.file} on {ep}", file=sys.stderr,
                                         flush=True),
               on_message=progress)
    progress.finish()
    print(f"replayed {n} messages", file=sys.stderr)
    return 0


# -- demo -----------------------------------------------------------------------------------
def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the main job on embedded defaults (no detector, "
                       "no cluster, no Tango database)",
                       description="Simulate a MOENCH detector streaming over real ZMQ on "
                       "loopback into the pipeline (local Ray, or --backend local) with the "
                       "Tango device (no database): a pedestal acquisition, then a pump-probe "
                       "acquisition with photon counting; writes a NeXus file per acquisition "
                       "and prints a summary.")
    p.add_argument("--backend", choices=["ray", "local"], default="ray",
                   help="pipeline backend")
    p.add_argument("--pedestal-frames", type=int, default=1000,
                   help="frames of the dark (pedestal) run")
    p.add_argument("-n", "--frames", type=int, default=2000, help="pump-probe frames")
    p.add_argument("--rate", type=float, default=0.0, help="frames/s (0: as fast as taken)")
    p.add_argument("--workers", type=int, default=2, help="processing actors")
    p.add_argument("--output", default="rayline-data", help="directory for the NeXus files")
    p.add_argument("--no-tango", action="store_true", help="do not start the Tango device")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from actors.app.demo import DemoSettings, run_demo

    settings = DemoSettings(backend=args.backend, pedestal_frames=args.pedestal_frames,
                            pumpprobe_frames=args.frames, rate=args.rate, workers=args.workers,
                            output=args.output, tango=not args.no_tango,
                            progress=not args.no_progress)
    results = run_demo(settings, sys.stdout)
    ok = all(r.outcome == "finished" and r.ledger["processed"] == r.ledger["received"]
             and r.file for r in results)
    return 0 if ok else 1


# -- run / config ---------------------------------------------------------------------------
def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run the service: pipeline + Tango device",
                       description="Run the pipeline and its Tango device until SIGINT or "
                       "SIGTERM (a running acquisition is drained, else aborted). Without a "
                       "CONFIG file the embedded defaults are used.")
    p.add_argument("config", nargs="?", help="YAML or TOML configuration file")
    p.add_argument("--auto", action="store_true",
                   help="start acquisitions automatically (free-running, no Tango needed)")
    _add_set(p)
    p.set_defaults(func=cmd_run, default_log_level="INFO")


def _add_pedestal(sub: Any) -> None:
    p = sub.add_parser("pedestal", help="take one Jungfrau dark run and write its pedestal",
                       description="Open the configured pipeline (its reducers need a "
                       "jungfrau_pedestal), start one acquisition recording the dark run of "
                       "GAIN, wait for the detector's series, write the pedestal file and "
                       "print what was recorded (JSON). Take the three: --gain 0 with the "
                       "detector dark, then 1 and 2 with it forced into G1 and G2.")
    p.add_argument("config", help="YAML or TOML configuration file")
    p.add_argument("--gain", type=int, choices=[0, 1, 2], required=True)
    p.add_argument("--file", help="the pedestal file (default: the jungfrau_pedestal "
                   "reducer's 'file', else the jungfrau reducer's 'pedestal_file')")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait for the detector's dark series")
    _add_set(p)
    p.set_defaults(func=cmd_pedestal, default_log_level="INFO")


def cmd_pedestal(args: argparse.Namespace) -> int:
    import dataclasses

    from actors import Pipeline
    from actors.config import load_config, parse_overrides, preflight

    overrides = parse_overrides(["tango.enabled=false", *args.set])
    config = load_config(args.config, overrides)
    preflight(config)
    with Pipeline(config) as pipe:
        record = pipe.record_pedestal(args.gain, args.file, args.timeout)
    print(json.dumps(dataclasses.asdict(record)))
    return 0


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a setting of the file, e.g. --set "
                   "source.endpoint=tcp://127.0.0.1:31001 --set ray.address=null (repeatable; "
                   "values read as YAML)")


def cmd_run(args: argparse.Namespace) -> int:
    from actors.app.service import run_service
    from actors.config import load_config, parse_overrides, preflight

    overrides = parse_overrides(args.set)
    preflight(load_config(args.config, overrides))
    return run_service(args.config, auto=args.auto, overrides=overrides)


def _add_config(sub: Any) -> None:
    p = sub.add_parser("config", help="check a configuration file or print its JSON schema",
                       description="'check FILE' validates a configuration and prints it with "
                       "every default filled in; 'schema' prints the JSON schema for editors.")
    p.add_argument("action", choices=["check", "schema"])
    p.add_argument("file", nargs="?", help="the configuration (default: the embedded one)")
    _add_set(p)
    p.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    from actors.config import json_schema, load_config, parse_overrides, preflight

    if args.action == "schema":
        print(json_schema())
        return 0
    cfg = load_config(args.file, parse_overrides(args.set))
    preflight(cfg)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


def _add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="the state and counters of running pipelines",
                       description="Read the state, ledger and rates of a running service from "
                       "its Tango device, or of every pipeline in a Ray cluster from its stage "
                       "actors (nothing is changed).")
    p.add_argument("device", nargs="?", help="a Rayline device: its full address "
                   "(tango://host:port/rayline/pipeline/1#dbase=no) or its name in the "
                   "TANGO_HOST database")
    p.add_argument("--ray", metavar="ADDRESS", help="the Ray cluster to look in (auto, or "
                   "host:port)")
    p.add_argument("--namespace", default="rayline", help="the pipelines' Ray namespace")
    p.add_argument("--json", action="store_true", help="one JSON object per pipeline")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from actors.app.status import cluster_status, describe, device_status

    if not args.device and not args.ray:
        raise ValueError("give a DEVICE address or --ray ADDRESS")
    found = [device_status(args.device)] if args.device else []
    if args.ray:
        found += cluster_status(args.ray, args.namespace)
        if not found:
            raise ValueError(f"no rayline pipeline in namespace {args.namespace!r} of the Ray "
                             f"cluster at {args.ray}")
    for status in found:
        print(json.dumps(status, default=str) if args.json else describe(status))
    return 0


def _add_tango_server(sub: Any) -> None:
    p = sub.add_parser("tango-server", help="the standalone Tango device server (for Astor / "
                       "Starter)", add_help=False,
                       description="Open the configured pipeline and serve its device until "
                       "the server is killed; 'rayline tango-server --help' lists the options.")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_tango_server)


def cmd_tango_server(args: argparse.Namespace) -> int:
    from actors.app.tango_server import main as serve

    return serve(args.args)


# -- bench ----------------------------------------------------------------------------------
BENCHES = {"pipeline": "actors.bench.pipeline", "local": "actors.bench.local",
           "modules": "actors.bench.modules", "ttr": "actors.bench.ttr",
           "reducers": "actors.bench.reducers", "soak": "actors.bench.soak",
           "report": "actors.bench.report"}


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure throughput against a ceiling in the same run",
                       description="Benchmarks print one JSON line per case, with the "
                       "ceiling measured in the same run and the ratio to it. 'pipeline': "
                       "Ray backend vs raw pyzmq receive; 'local': shared-memory backend vs "
                       "raw receive; 'modules': a multi-module detector with 1, 2 and 4 ingests "
                       "vs raw receive of the same streams; 'reducers': reducer kernels vs a "
                       "numpy pass; 'ttr': time to result (first and warm acquisitions) on both "
                       "backends vs raw receive, with CPU per frame by role; 'report': all of "
                       "them, written as JSON and drawn as a PNG; 'soak': a "
                       "long run at part of the capacity (memory growth per process, "
                       "ledger). Arguments "
                       "after the name go to the benchmark (e.g. 'rayline bench pipeline -- "
                       "--help').")
    p.add_argument("name", choices=sorted(BENCHES))
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(BENCHES[args.name])
    rest = [a for a in args.args if a != "--"]
    return int(module.main(rest))


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default unless its help already says it (or it has none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or \
                default is argparse.SUPPRESS or default in ([], "") or \
                (not action.option_strings and action.nargs in ("?", "*")):
            return text
        return f"{text} (default: %(default)s)"


def _add_common(p: argparse.ArgumentParser, default: Any = None) -> None:
    """Options every command takes, before or after its name."""
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   default=default, help="default: INFO for run, WARNING otherwise")
    p.add_argument("--debug", action="store_true", default=default,
                   help="show the traceback of an error (and log at DEBUG)")


def build_parser() -> argparse.ArgumentParser:
    from actors.version import __version__

    parser = argparse.ArgumentParser(prog="rayline", description="Live X-ray detector stream "
                                     "processing: ZMQ ingest, reducers, Tango, files.",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"rayline {__version__}")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_run, _add_pedestal, _add_simulate, _add_receive, _add_record,
                _add_replay, _add_config, _add_status, _add_tango_server, _add_bench):
        add(sub)
    for name, p in sub.choices.items():
        p.formatter_class = _HelpFormatter  # defaults shown
        if name not in ("tango-server", "bench"):  # (their arguments go on as they are)
            _add_common(p, argparse.SUPPRESS)  # after the command too, without overriding
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = "DEBUG" if args.debug else args.log_level
    setup_logging(level or getattr(args, "default_log_level", "WARNING"))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        if args.debug:
            raise
        print(f"rayline {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """The error as one line: its message (its type when that says more), no traceback."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (ValueError, TimeoutError, FileNotFoundError, FileExistsError,
                        PermissionError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
