"""Protocol name → decoder function."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from actors.wire.model import Buffer, Message, Protocol

Decoder = Callable[[Sequence[Buffer]], Message]


def decoder_for(protocol: Protocol | str, *, accept_incomplete: bool = False) -> Decoder:
    """The pure decode function of a protocol (``sls``, ``dectris-v1``, ``dectris-v2``)."""
    proto = Protocol(protocol)
    if proto is Protocol.SLS:
        from actors.wire import sls

        return functools.partial(sls.decode, accept_incomplete=accept_incomplete)
    if proto is Protocol.DECTRIS_V1:
        from actors.wire import dectris_v1

        return dectris_v1.decode
    from actors.wire import dectris_v2

    return dectris_v2.decode
