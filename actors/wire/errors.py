"""Why a message was rejected: one exception type with a machine-readable reason."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Rejection reasons counted by the receiver ledger."""

    PART_COUNT = "part_count"  #: wrong number of multipart parts
    BAD_JSON = "bad_json"  #: a JSON part does not parse or is not an object
    BAD_CBOR = "bad_cbor"  #: a CBOR message does not parse
    BAD_HEADER = "bad_header"  #: a header field is missing or has the wrong type
    UNKNOWN_TYPE = "unknown_type"  #: unknown htype / message type
    UNKNOWN_ENCODING = "unknown_encoding"  #: unknown pixel encoding
    UNSUPPORTED = "unsupported"  #: valid but not supported (bit mode, dtype...)
    SIZE_MISMATCH = "size_mismatch"  #: payload size disagrees with the header
    OVERSIZE = "oversize"  #: larger than the configured geometry allows
    BAD_HASH = "bad_hash"  #: MD5 in the header does not match
    CORRUPT = "corrupt"  #: compressed payload does not decompress to the declared size
    INCOMPLETE = "incomplete"  #: the detector reports missing packets (sls completeImage 0)
    GEOMETRY = "geometry"  #: frame shape/dtype differs from the configured geometry
    DUPLICATE = "duplicate"  #: frame number already seen in this series
    OUT_OF_SERIES = "out_of_series"  #: image of another series than the current one
    DECLARED_LIMIT = "declared_limit"  #: a declared geometry or image count beyond the maxima


class DecodeError(ValueError):
    """A message (or payload) that cannot be accepted; ``reason`` says which rule it broke."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
