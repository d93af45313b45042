"""A cursor over bytes for decoding; every short read raises `DecodeError('badlen')`."""

from __future__ import annotations

import struct

from carpsim.errors import DecodeError

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class Buffer:
    """Read-only cursor; `reason` is the DecodeError reason used when data runs out."""

    __slots__ = ("_data", "_pos", "reason")

    def __init__(self, data: bytes, *, reason: str = "badlen") -> None:
        self._data = memoryview(data)
        self._pos = 0
        self.reason = reason

    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._data):
            raise DecodeError(
                self.reason, f"need {n} bytes at offset {self._pos}, have {self.remaining}"
            )
        view = self._data[self._pos : self._pos + n]
        self._pos += n
        return view

    def pull_bytes(self, n: int) -> bytes:
        return bytes(self._take(n))

    def pull_u8(self) -> int:
        return self._take(1)[0]

    def pull_u16(self) -> int:
        return int(_U16.unpack(self._take(2))[0])

    def pull_u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def pull_u64(self) -> int:
        return int(_U64.unpack(self._take(8))[0])

    def skip(self, n: int) -> None:
        self._take(n)

    def rest(self) -> bytes:
        return self.pull_bytes(self.remaining)
