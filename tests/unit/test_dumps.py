"""Readers for other tools' stream dumps: dranspose ingester, raw .cbors, zipped."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import cbor2
import pytest

from actors.record.dumps import iter_dump_messages
from actors.wire.errors import DecodeError, Reason

MESSAGES = [[b'{"htype":"dheader-1.0"}', b"config"], [b"image", b"\x00" * 1000, b""], [b"end"]]


def _ingester_item(event: int, streams: dict[str, list[bytes]], wrap: bool) -> bytes:
    value: Any = cbor2.CBORTag(42877, [event, {
        name: cbor2.CBORTag(42878, ["EIGER_LEGACY", parts]) for name, parts in streams.items()}])
    if wrap:
        value = cbor2.CBORTag(55799, value)
    return cbor2.dumps(value)


def _write(path: Path, items: list[bytes]) -> Path:
    path.write_bytes(b"".join(items))
    return path


def test_raw_cbors(tmp_path: Path) -> None:
    path = _write(tmp_path / "raw.cbors", [cbor2.dumps(m) for m in MESSAGES])
    assert list(iter_dump_messages(path)) == MESSAGES
    assert list(iter_dump_messages(str(path))) == MESSAGES


@pytest.mark.parametrize("wrap", [False, True])
def test_ingester_dump(tmp_path: Path, wrap: bool) -> None:
    items = [_ingester_item(i, {"eiger": m}, wrap) for i, m in enumerate(MESSAGES)]
    path = _write(tmp_path / "ingester.cbors", items)
    messages = list(iter_dump_messages(path))
    assert messages == MESSAGES
    assert all(isinstance(p, bytes) for m in messages for p in m)


def test_ingester_dump_with_several_streams(tmp_path: Path) -> None:
    items = [_ingester_item(0, {"eiger": [b"e0"], "pcap": [b"p0", b"p0b"]}, True),
             _ingester_item(1, {"pcap": [b"p1"]}, True),
             _ingester_item(2, {"eiger": [b"e2"]}, False)]
    path = _write(tmp_path / "multi.cbors", items)
    assert list(iter_dump_messages(path)) == [[b"e0"], [b"p0", b"p0b"], [b"p1"], [b"e2"]]
    assert list(iter_dump_messages(path, stream="eiger")) == [[b"e0"], [b"e2"]]
    assert list(iter_dump_messages(path, stream="pcap")) == [[b"p0", b"p0b"], [b"p1"]]
    assert list(iter_dump_messages(path, stream="nothing")) == []


@pytest.mark.parametrize("kind", ["raw", "ingester"])
def test_zipped_dump_is_streamed(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch,
                                 ) -> None:
    items = [cbor2.dumps(m) if kind == "raw" else _ingester_item(i, {"s": m}, True)
             for i, m in enumerate(MESSAGES)]
    path = tmp_path / "dump.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("notes.txt", "not a dump")
        zf.writestr("dir/stream.cbors", b"".join(items))

    def no_extract(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the dump must be read from the archive, not extracted")

    monkeypatch.setattr(zipfile.ZipFile, "extract", no_extract)
    monkeypatch.setattr(zipfile.ZipFile, "extractall", no_extract)
    assert list(iter_dump_messages(path)) == MESSAGES


def test_real_recording_through_the_zip() -> None:
    path = Path(__file__).resolve().parents[1] / "data" / "eiger_legacy_dump.zip"
    iterator = iter_dump_messages(path, stream="eigerxes")
    first = next(iterator)  # lazily: the first message before the rest is read
    assert len(first) == 9 and first[0].startswith(b'{"header_detail":"all"')
    assert sum(1 for _ in iterator) == 9


def test_empty_file(tmp_path: Path) -> None:
    assert list(iter_dump_messages(_write(tmp_path / "empty.cbors", []))) == []


def _reason(path: Path) -> Reason:
    with pytest.raises(DecodeError) as info:
        list(iter_dump_messages(path))
    return info.value.reason


def test_malformed_dumps(tmp_path: Path) -> None:
    good = cbor2.dumps(MESSAGES[0])
    assert _reason(_write(tmp_path / "cut.cbors", [good, good[:-3]])) is Reason.BAD_CBOR
    assert _reason(_write(tmp_path / "junk.cbors", [good, b"\xff\xff"])) is Reason.BAD_CBOR
    assert _reason(_write(tmp_path / "int.cbors", [cbor2.dumps(5)])) is Reason.BAD_HEADER
    assert _reason(_write(tmp_path / "ints.cbors", [cbor2.dumps([1, 2])])) is Reason.BAD_HEADER
    bad_event = cbor2.dumps(cbor2.CBORTag(42877, [0, {"s": [b"not tagged"]}]))
    assert _reason(_write(tmp_path / "event.cbors", [bad_event])) is Reason.BAD_HEADER
    short_event = cbor2.dumps(cbor2.CBORTag(42877, [0]))
    assert _reason(_write(tmp_path / "short.cbors", [short_event])) is Reason.BAD_HEADER
    path = tmp_path / "none.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.txt", "x")
    assert _reason(path) is Reason.BAD_HEADER
