"""The pipeline configuration: one YAML (or TOML) file, validated at load.

Every key has a default, so an empty file (or no file) runs the demo: a MOENCH detector on
``tcp://127.0.0.1:30001`` (sls, SUB), two workers, the MOENCH reducer chain. Errors name the
bad key and what is allowed. :func:`json_schema` gives a JSON schema for editors.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from actors.wire.model import PIXEL_DTYPES, Geometry, Protocol


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key."""


def confine(directory: Path, roots: Sequence[str | os.PathLike[str]],
            setting: str = "filepath") -> Path:
    """``directory`` if it lies inside one of ``roots`` once resolved (symlinks followed,
    ``..`` folded); else a ValueError naming the allowed roots."""
    resolved = directory.expanduser().resolve()
    for root in roots:
        r = Path(root).expanduser().resolve()
        if resolved == r or r in resolved.parents:
            return directory
    allowed = ", ".join(str(Path(r)) for r in roots)
    raise ValueError(f"{setting} {str(directory)!r} is outside the allowed directories "
                     f"({allowed}; output.allowed_roots)")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GeometryConfig(_Model):
    """Frame shape for protocols that do not declare it up front."""

    rows: Annotated[int, Field(gt=0, description="frame height in pixels")]
    cols: Annotated[int, Field(gt=0, description="frame width in pixels")]
    dtype: Annotated[str, Field(description=f"pixel type, one of {PIXEL_DTYPES}")] = "uint16"

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in PIXEL_DTYPES:
            raise ValueError(f"must be one of {', '.join(PIXEL_DTYPES)}")
        return v

    def to_geometry(self) -> Geometry:
        return Geometry(self.rows, self.cols, self.dtype)


class SourceConfig(_Model):
    """Where frames come from."""

    endpoint: str = Field("tcp://127.0.0.1:30001",
                          description="ZMQ endpoint of the detector stream")
    protocol: Protocol = Field(Protocol.SLS, description="sls, dectris-v1 or dectris-v2")
    socket: Literal["sub", "pull"] | None = Field(
        None, description="sub or pull (default: sub for sls, pull for DECTRIS)")
    bind: bool = Field(False, description="bind instead of connect (the detector connects)")
    geometry: GeometryConfig | None = Field(
        None, description="expected frame geometry (default: learned from the stream)")
    channel: str | None = Field(None, description="DECTRIS V2 channel to reduce "
                                "(default: the first)")
    reorder: str = Field("none", description="pixel reorder map: none, moench03 or a .npy")
    accept_incomplete: bool = Field(False, description="sls: keep frames with missing packets")
    hwm: int | None = Field(None, gt=0, description="ZMQ receive high-water mark (messages)")
    max_frame_pixels: int = Field(
        40_000_000, gt=0, description="the largest frame a stream may declare (pixels); "
        "larger declarations are rejected as declared_limit")
    max_images: int = Field(1_000_000_000, gt=0, description="the most images a series may "
                            "declare; more is rejected as declared_limit")
    receive_buffer_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="bytes of frames the receive queue may hold: "
        "its high-water mark is this over the frame size of `geometry`, else over the largest "
        "message allowed (at least 4 messages)")
    name: str | None = Field(None, description="the source's name in ledgers, Tango and "
                             "files (default: source0, source1, ... in list order)")
    node: str | None = Field(None, description="Ray: the IP address of the node whose "
                             "network interface receives this stream (its ingest runs there)")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Ray: custom resources its ingest actor needs "
        "(e.g. {rx_a: 0.01}, a resource only the receiving node declares)")
    offset: tuple[int, int] | None = Field(
        None, description="role module: where this module's first pixel goes in the "
        "detector's frame, [row, column] (default: the header's row/column x the module "
        "shape); give it for every module or none")
    role: Literal["module", "share"] = Field(
        "module", description="with several sources: module (each stream is one part of "
        "every frame, slsDetector) or share (each source is one of several PULL clients of "
        "one DECTRIS PUSH stream: whole frames, a share of them)")

    @property
    def socket_kind(self) -> Literal["sub", "pull"]:
        if self.socket is not None:
            return self.socket
        return "sub" if self.protocol is Protocol.SLS else "pull"

    @field_validator("reorder")
    @classmethod
    def _reorder(cls, v: str) -> str:
        if v in ("", "none", "moench03"):
            return v
        if not v.endswith(".npy") or not Path(v).expanduser().is_file():
            raise ValueError(f"{v!r} is not 'none', 'moench03' or an existing .npy file")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError("must be a ZMQ endpoint such as tcp://host:port or ipc:///path")
        return v


class ModulesConfig(_Model):
    """A detector sending one stream per module (``sources`` with several entries)."""

    timeout: float = Field(1.0, gt=0, description="how long a frame-number range waits for "
                           "a module that sent nothing of it, before it goes without it")
    incomplete: Literal["drop", "mask"] = Field(
        "drop", description="a frame a module lacks: drop it (counted incomplete) or "
        "process it with that module's pixels at 0")
    drain: float = Field(0.2, gt=0, description="share sources: once one client has seen "
                         "the series end, the others close when no frame has reached them "
                         "for this many seconds")


class RayConfig(_Model):
    """The Ray runtime."""

    address: str | None = Field(None, description="join an existing cluster ('auto' or "
                                "host:port); default: start a local Ray")
    object_store_memory: int | None = Field(
        1_000_000_000, ge=78_643_200,
        description="object store bound in bytes for a local Ray (None: Ray's default)")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of a local Ray (default: all)")
    namespace: str = "rayline"
    worker_cpus: float = Field(1.0, ge=0, description="CPUs reserved per processing actor")
    placement: Literal["spread", "pack"] = Field(
        "spread", description="processing actors: spread over all nodes, or pack")
    inflight_bytes: int | None = Field(
        None, gt=0, description="bytes of batches held in the object store at most "
        "(default: half the object store of the ingest's node, so it never spills)")


#: ``batch.max_frames: auto``: frames per batch, and the bytes small frames fill a batch to
AUTO_FRAMES = 32
AUTO_BATCH_BYTES = 32_000_000
AUTO_MAX_FRAMES = 1024


class BatchConfig(_Model):
    """How frames are grouped before they enter the object store."""

    max_frames: int | Literal["auto"] = Field(
        "auto", description="frames per batch at most; 'auto': 32, or for frames under 1 MB "
        "as many as fill 32 MB (at most 1024), so small frames do not pay the per-batch cost "
        "(an object-store put, a worker call, a merge) every 32 frames")
    max_delay: float = Field(0.05, gt=0, description="seconds a batch may wait to fill")

    @field_validator("max_frames")
    @classmethod
    def _frames_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 < value <= 4096:
            raise ValueError(f"max_frames must be 1..4096 or 'auto', got {value}")
        return value

    def frames_for(self, frame_bytes: int) -> int:
        """Frames per batch at most, for frames of ``frame_bytes``."""
        if self.max_frames != "auto":
            return int(self.max_frames)
        return max(AUTO_FRAMES, min(AUTO_MAX_FRAMES, AUTO_BATCH_BYTES // max(1, frame_bytes)))


class OutputConfig(_Model):
    """The acquisition files."""

    enabled: bool = True
    directory: str = Field("rayline-data", description="directory for the NeXus files")
    filename: str = Field("run", description="file name prefix: {filename}_{index:06d}.h5")
    frames: bool = Field(False, description="also store per-frame stacks")
    instrument_name: str = Field("unknown", description="the beamline or instrument, "
                                 "recorded as /entry/instrument/name")
    source_name: str = Field("unknown", description="the facility (light source), recorded "
                             "as /entry/source/name")
    sample_name: str = Field("unknown", description="the sample, recorded as "
                             "/entry/sample/name")
    allowed_roots: list[str] | None = Field(
        None, description="directories files may be written under, whoever sets the file "
        "path (e.g. a Tango client writing filepath); default: the parent of directory")

    def roots(self) -> list[Path]:
        """Where files may go: ``allowed_roots``, else the parent of ``directory``."""
        if self.allowed_roots:
            return [Path(r).expanduser().absolute() for r in self.allowed_roots]
        return [Path(self.directory).expanduser().absolute().parent]

    @model_validator(mode="after")
    def _directory_allowed(self) -> OutputConfig:
        confine(Path(self.directory), self.roots(), "directory")
        return self


class TangoConfig(_Model):
    """The Tango device."""

    enabled: bool = True
    device: str = Field("rayline/pipeline/1", description="device name (domain/family/member)")
    database: bool = Field(False, description="register in the Tango database (TANGO_HOST); "
                           "False runs -nodb")
    host: str = Field("127.0.0.1", description="address the -nodb server listens on")
    port: int = Field(0, ge=0, le=65535, description="-nodb port (0: any free port)")
    instance: str = Field("rayline", description="server instance name")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if len(v.split("/")) != 3 or not all(v.split("/")):
            raise ValueError("must be domain/family/member")
        return v


ReducerSpec = dict[str, Any]


class PipelineConfig(_Model):
    """The whole pipeline."""

    source: SourceConfig = SourceConfig()
    sources: list[SourceConfig] | None = Field(
        None, description="several streams, one ingest each: the modules of a detector "
        "(role module, slsDetector: frames assembled by the workers) or several PULL "
        "clients of one DECTRIS stream (role share: frames merged by number); `source` is "
        "the shorthand for one stream")
    modules: ModulesConfig = ModulesConfig()
    backend: Literal["ray", "local"] = Field("ray", description="ray or local "
                                             "(multiprocessing shared memory)")
    ray: RayConfig = RayConfig()
    workers: int = Field(2, gt=0, le=1024, description="processing actors / worker processes")
    batch: BatchConfig = BatchConfig()
    max_inflight: int = Field(4, gt=0, description="batches in flight at most (back-pressure)")
    overflow: Literal["block", "drop"] = Field(
        "block", description="when workers fall behind: block (stop reading) or drop batches")
    reducers: list[ReducerSpec] = Field(
        default_factory=lambda: [{"type": "moench"}],
        description="ordered reducer list: {type: name or package.module:Class, name?, "
                    "settings...}")
    output: OutputConfig = OutputConfig()
    tango: TangoConfig = TangoConfig()
    live_period: float = Field(0.5, gt=0, description="seconds between live result events")
    acquisition_timeout: float = Field(60.0, gt=0,
                                       description="stop waits this long for processing")
    stop_grace: float = Field(
        5.0, gt=0, description="after a stop, the acquisition still takes the frames that "
        "arrive until the stream's end of series, for at most this many seconds")
    stop_quiet: float = Field(
        1.0, gt=0, description="... or until no frame has arrived for this many seconds "
        "(a stream without an end of series, or a sender that stopped)")

    @field_validator("reducers")
    @classmethod
    def _reducers(cls, v: list[ReducerSpec]) -> list[ReducerSpec]:
        if not v:
            raise ValueError("needs at least one reducer")
        names: list[str] = []
        for i, spec in enumerate(v):
            if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
                raise ValueError(f"entry {i} needs a 'type' (a built-in name or "
                                 "package.module:Class)")
            names.append(str(spec.get("name", spec["type"])))
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"reducer names must be unique; repeated: {sorted(dup)} "
                             "(give each a 'name')")
        problems = []
        for i, spec in enumerate(v):
            try:
                _check_reducer_settings(i, spec)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))  # every bad entry, not just the first
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_inflight(cls, data: Any) -> Any:
        """``max_inflight`` not given: enough for every worker (at least 4)."""
        if isinstance(data, dict) and "max_inflight" not in data and \
                isinstance(data.get("workers"), int) and not isinstance(data["workers"], bool):
            data = {**data, "max_inflight": max(4, data["workers"])}
        return data

    @model_validator(mode="before")
    @classmethod
    def _one_or_several_sources(cls, data: Any) -> Any:
        """``sources`` given: ``source`` is its first entry (the primary stream)."""
        if isinstance(data, dict) and data.get("sources") is not None:
            if "source" in data:
                raise ValueError("give either source (one stream) or sources (several), "
                                 "not both")
            sources = data["sources"]
            if not isinstance(sources, list) or not sources:
                raise ValueError("sources: a non-empty list of sources")
            data = {**data, "source": sources[0]}
        return data

    @model_validator(mode="after")
    def _sources(self) -> PipelineConfig:
        if self.sources is None:
            return self
        names = self.source_names
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"sources: names must be unique; repeated: {sorted(dup)}")
        if len(self.sources) > 1:
            roles = {s.role for s in self.sources}
            if len(roles) > 1:
                raise ValueError("sources: every source has the same role (module or share)")
            if roles == {"module"} and any(s.protocol is not Protocol.SLS
                                           for s in self.sources):
                raise ValueError("sources: role module is for the modules of an slsDetector "
                                 "(protocol sls); several clients of one DECTRIS stream are "
                                 "role: share")
            if roles == {"share"} and any(s.protocol is Protocol.SLS or
                                          s.socket_kind != "pull" for s in self.sources):
                raise ValueError("sources: role share is for several PULL clients of a "
                                 "DECTRIS stream (protocol dectris-v1 or dectris-v2, socket "
                                 "pull)")
            offsets = [s.offset for s in self.sources]
            if roles == {"share"} and any(o is not None for o in offsets):
                raise ValueError("sources: clients sharing a stream receive whole frames: no "
                                 "offset")
            if any(o is not None for o in offsets) and any(o is None for o in offsets):
                raise ValueError("sources: give an offset for every module or for none")
            if any(o is not None and min(o) < 0 for o in offsets):
                raise ValueError("sources: an offset is [row, column] >= 0")
            if self.overflow != "block":
                raise ValueError("sources: a multi-module detector needs overflow: block "
                                 "(a dropped batch of one module would leave the others "
                                 "incomplete)")
        return self

    @property
    def all_sources(self) -> list[SourceConfig]:
        """Every stream, in order (the first is ``source``)."""
        return list(self.sources) if self.sources is not None else [self.source]

    @property
    def source_names(self) -> list[str]:
        return [s.name or f"source{i}" for i, s in enumerate(self.all_sources)]

    def for_source(self, index: int) -> PipelineConfig:
        """The configuration the ingest of the ``index``-th stream runs with."""
        return self.model_copy(update={"source": self.all_sources[index]})

    @property
    def modular(self) -> bool:
        """Several streams, one ingest each (modules, or clients sharing one stream)."""
        return len(self.all_sources) > 1

    @property
    def shared(self) -> bool:
        """Several PULL clients of one stream, each receiving whole frames (role share)."""
        return self.modular and self.source.role == "share"

    @model_validator(mode="after")
    def _inflight(self) -> PipelineConfig:
        if self.max_inflight < self.workers:
            raise ValueError(f"max_inflight ({self.max_inflight}) must be at least workers "
                             f"({self.workers}) or some workers would idle")
        return self


def _check_reducer_settings(i: int, spec: ReducerSpec) -> None:
    """Validate a reducer entry's settings now (those needing the geometry, such as ROIs
    inside the frame, are checked when the first frame fixes it)."""
    from actors.reduce.registry import reducer_class

    try:
        cls = reducer_class(str(spec["type"]))
    except ValueError as exc:
        raise ValueError(f"entry {i}: {exc}") from None
    settings = {k: val for k, val in spec.items() if k not in ("type", "name")}
    try:
        cls.Settings.model_validate(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: "
            f"{'unknown setting' if err['type'] == 'extra_forbidden' else err['msg']}"
            for err in exc.errors())
        raise ValueError(f"entry {i} ({spec.get('name', spec['type'])}): {problems}") from None


def _format_errors(exc: ValidationError, origin: str) -> str:
    """One line naming every bad key (``key: why; key: why``)."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error" or err["type"] == "enum":
            msg = f"{msg} (got {err.get('input')!r})"
        elif err["type"] == "value_error":
            msg = str(err.get("ctx", {}).get("error", msg))  # without pydantic's prefix
        problems.append(f"{key}: {msg}" if key else msg)
    return f"invalid configuration {origin}: " + "; ".join(problems)


def parse_config(data: Any, origin: str = "") -> PipelineConfig:
    """Validate a mapping (from YAML/TOML/JSON); raises :class:`ConfigError`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration {origin}: the top level must be a mapping")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


def load_config(path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a YAML (``.yaml``/``.yml``/``.json``) or TOML (``.toml``) file, or the defaults."""
    data: Any = {}
    origin = "(defaults)"
    if path is not None:
        p = Path(path)
        origin = str(p)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {p}: {exc.strerror}") from None
        try:
            data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"configuration {p} does not parse: {exc}") from None
    if overrides:
        data = _deep_merge(data or {}, overrides)
    return parse_config(data, origin)


def check_output_directory(cfg: PipelineConfig) -> None:
    """ConfigError unless files can be written where ``output.directory`` is (or will be
    created): a file is created and removed in its nearest existing ancestor."""
    if not cfg.output.enabled:
        return
    directory = Path(cfg.output.directory).expanduser().absolute()
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output.directory {directory}: {existing} is not a directory")
    try:
        fd, name = tempfile.mkstemp(dir=existing, prefix=".rayline-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"output.directory {directory}: cannot write in {existing} "
                          f"({exc.strerror})") from None


def check_tango_host(cfg: PipelineConfig) -> None:
    """ConfigError when the device is to register with a Tango database and nothing says
    where it is (``TANGO_HOST``, ``~/.tangorc``, ``/etc/tangorc``): Tango itself would end
    the process."""
    if not (cfg.tango.enabled and cfg.tango.database) or os.environ.get("TANGO_HOST"):
        return
    for rc in (Path.home() / ".tangorc", Path("/etc/tangorc")):
        try:
            if "TANGO_HOST" in rc.read_text():
                return
        except OSError:
            continue
    raise ConfigError("tango.database is true but TANGO_HOST is not set: set it to the "
                      "database's host:port, or set tango.database: false (no database)")


def preflight(cfg: PipelineConfig) -> None:
    """What a valid configuration still needs from this machine, checked before starting:
    a writable output directory, a Tango database address."""
    check_output_directory(cfg)
    check_tango_host(cfg)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set`` arguments (``source.endpoint=tcp://host:31001``, ``workers=2``,
    ``ray.address=null``) as a nested mapping to merge over a file; each value is read as
    YAML (numbers, booleans, ``null``, ``[1, 2]``, ``{a: 1}``), else kept as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. "
                              "source.endpoint=tcp://127.0.0.1:31001")
        try:
            value = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            value = text
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part.strip(), {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part.strip()!r} is set to a value above")
            node = child
        node[parts[-1].strip()] = value
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(
            out.get(k), dict) else v
    return out


def as_config(config: PipelineConfig | Mapping[str, Any] | str | Path | None) -> PipelineConfig:
    """A validated config from a model, a mapping, a file path, or None (the defaults)."""
    if isinstance(config, PipelineConfig):
        return config
    if config is None or isinstance(config, str | Path):
        return load_config(config)
    return parse_config(dict(config), "(mapping)")


def json_schema() -> str:
    """The JSON schema of the configuration file (for editor validation)."""
    return json.dumps(PipelineConfig.model_json_schema(), indent=2)
