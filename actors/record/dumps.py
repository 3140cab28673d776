"""Read stream recordings made by other tools, one multipart message at a time.

Formats (auto-detected per record):

* dranspose ingester dumps: a sequence of CBOR items ``tag 42877 [event_number,
  {stream_name: tag 42878 [stream_type, [part, ...]]}, ...]``, optionally wrapped in the
  self-describe tag 55799; every stream of every event is one message;
* dranspose "raw" ``.cbors``: a concatenation of CBOR arrays of byte strings, one array per
  multipart message;
* a ``.zip`` holding one ``.cbors`` file of either kind, streamed from the archive.

Records are read with ``cbor2`` (>= 6 decodes arrays inside tags as tuples and maps as
frozendicts; both are accepted). Malformed files raise
:class:`~actors.wire.errors.DecodeError` (``BAD_CBOR`` when a record does not parse,
``BAD_HEADER`` when it has the wrong structure).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol, cast

import cbor2

from actors.wire.errors import DecodeError, Reason

TAG_SELF_DESCRIBE = 55799
TAG_EVENT = 42877  #: dranspose InternalWorkerMessage / EventData
TAG_STREAM = 42878  #: dranspose StreamData


def _parts(frames: Any, where: str) -> list[bytes]:
    if not isinstance(frames, list | tuple) or not all(isinstance(f, bytes | bytearray)
                                                       for f in frames):
        raise DecodeError(Reason.BAD_HEADER, f"{where}: expected a list of byte strings")
    return [bytes(f) for f in frames]


def _untag(item: Any, tag: int) -> Any:
    """Value of ``tag`` around ``item`` (the self-describe tag may sit outside it)."""
    while isinstance(item, cbor2.CBORTag) and item.tag == TAG_SELF_DESCRIBE:
        item = item.value
    if isinstance(item, cbor2.CBORTag) and item.tag == tag:
        return item.value
    return None


def _messages(item: Any, index: int, stream: str | None) -> Iterator[list[bytes]]:
    where = f"record {index}"
    while isinstance(item, cbor2.CBORTag) and item.tag == TAG_SELF_DESCRIBE:
        item = item.value
    if isinstance(item, list | tuple):
        yield _parts(item, where)
        return
    event = _untag(item, TAG_EVENT)
    if not isinstance(event, list | tuple) or len(event) < 2 or not isinstance(event[1], Mapping):
        raise DecodeError(Reason.BAD_HEADER, f"{where}: neither a tag {TAG_EVENT} event nor "
                                             "an array of byte strings")
    for name, data in event[1].items():
        if stream is not None and name != stream:
            continue
        value = _untag(data, TAG_STREAM)
        if not isinstance(value, list | tuple) or len(value) < 2:
            raise DecodeError(Reason.BAD_HEADER, f"{where}: stream {name!r} is not a tag "
                                                 f"{TAG_STREAM} [type, parts]")
        yield _parts(value[1], f"{where} stream {name!r}")


class _Peekable(Protocol):
    """A binary file that can look ahead (``BufferedReader``, ``ZipExtFile``)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def peek(self, size: int = 0, /) -> bytes: ...


def _iter_items(fp: IO[bytes]) -> Iterator[Any]:
    """CBOR items of ``fp`` until a clean end of file (a cut-off item raises)."""
    ahead = cast(_Peekable, fp)  # both BufferedReader and ZipExtFile can peek
    decoder = cbor2.CBORDecoder(fp)
    index = 0
    while ahead.peek(1):
        try:
            yield decoder.decode()
        except cbor2.CBORDecodeError as exc:
            raise DecodeError(Reason.BAD_CBOR, f"record {index} does not parse: {exc}") from exc
        index += 1


def _open_cbors(zf: zipfile.ZipFile) -> IO[bytes]:
    names = [n for n in zf.namelist() if n.endswith(".cbors")]
    if len(names) != 1:
        raise DecodeError(Reason.BAD_HEADER, f"zip must hold exactly one .cbors file, "
                                             f"found {names}")
    return zf.open(names[0])


def iter_dump_messages(path: str | Path, stream: str | None = None) -> Iterator[list[bytes]]:
    """Yield every recorded multipart message in ``path`` as a list of byte strings.

    ``stream`` keeps only that stream of an ingester dump (raw dumps have no stream names).
    """
    path = Path(path)
    with path.open("rb") as raw:
        if zipfile.is_zipfile(raw):
            raw.seek(0)
            with zipfile.ZipFile(raw) as zf, _open_cbors(zf) as member:
                yield from _iter_messages(member, stream)
        else:
            raw.seek(0)
            yield from _iter_messages(raw, stream)


def _iter_messages(fp: IO[bytes], stream: str | None) -> Iterator[list[bytes]]:
    for index, item in enumerate(_iter_items(fp)):
        yield from _messages(item, index, stream)
