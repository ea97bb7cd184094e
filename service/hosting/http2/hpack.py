"""HPACK (RFC 7541), as an HTTP/2 server needs it: a decoder for the client's header blocks (the static and the
dynamic table, size updates, Huffman-coded strings) and an encoder that writes literals without indexing (never
touching the client's dynamic table, so nothing has to be tracked for it)."""

from __future__ import annotations

from collections import deque
from functools import lru_cache

STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
    ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""), ("date", ""),
    ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""), ("if-match", ""),
    ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""),
    ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
    ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""),
    ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)

# The length in bits of each symbol's code (RFC 7541, Appendix B; symbol 256 is EOS). The code is canonical: codes
# of one length are consecutive in symbol order, each length's first follows the last of the shorter ones.
HUFFMAN_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28,
    28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6,
    12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15,
    5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20,
    22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22,
    23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24,
    21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26,
    27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
)
EOS = 256
DEFAULT_TABLE_SIZE = 4096


MAX_HEADER_LIST = 64 * 1024  # decoded names and values, 32 bytes more each (RFC 7541, 4.1)


class HpackError(ValueError):
    """A header block that does not decode: a connection error (COMPRESSION_ERROR) in HTTP/2."""


class HeaderListTooLarge(Exception):
    """A header block that decodes to more than the list size allowed: the block was decoded whole (the table
    stays in step with the client's) but its headers are dropped; a stream error."""


def _huffman_tree() -> list[list[int]]:
    """The decoding tree of the canonical code: node -> [child for bit 0, child for bit 1]; a child below 0 is the
    leaf of symbol ``-child - 1``."""
    tree: list[list[int]] = [[0, 0]]
    code, previous = -1, 0
    for symbol in sorted(range(len(HUFFMAN_LENGTHS)), key=lambda s: (HUFFMAN_LENGTHS[s], s)):
        length = HUFFMAN_LENGTHS[symbol]
        code = (code + 1) << (length - previous)
        previous = length
        node = 0
        for shift in range(length - 1, 0, -1):
            bit = (code >> shift) & 1
            if not tree[node][bit]:
                tree.append([0, 0])
                tree[node][bit] = len(tree) - 1
            node = tree[node][bit]
        tree[node][code & 1] = -symbol - 1
    return tree


def _nibble_table() -> tuple[list[tuple[int, bytes, bool]], list[bool]]:
    """For each (node, 4 bits): the node reached, the symbols completed on the way and whether EOS (an error) was
    among them; and for each node whether a string may end there (at most 7 bits, all ones, into the tree)."""
    tree = _huffman_tree()
    table: list[tuple[int, bytes, bool]] = []
    for node in range(len(tree)):
        for nibble in range(16):
            at, out, bad = node, bytearray(), False
            for shift in (3, 2, 1, 0):
                child = tree[at][(nibble >> shift) & 1]
                if child < 0:
                    if -child - 1 == EOS:
                        bad = True
                    else:
                        out.append(-child - 1)
                    at = 0
                else:
                    at = child
            table.append((at, bytes(out), bad))
    can_end = [False] * len(tree)
    node = 0
    can_end[0] = True
    for _ in range(7):  # the all-ones path: the EOS code's first bits
        node = tree[node][1]
        can_end[node] = True
    return table, can_end


_NIBBLES, _CAN_END = _nibble_table()
CACHED_HUFFMAN = 64  # strings up to this long are remembered: a client sends the same values again and again


def huffman_decode(data: bytes) -> bytes:
    return _huffman_cached(data) if len(data) <= CACHED_HUFFMAN else _huffman(data)


@lru_cache(maxsize=1024)
def _huffman_cached(data: bytes) -> bytes:
    return _huffman(data)


def _huffman(data: bytes) -> bytes:
    """A Huffman-coded string, four bits at a time."""
    out = bytearray()
    node = 0
    table = _NIBBLES
    for byte in data:
        node, emitted, bad = table[(node << 4) | (byte >> 4)]
        if emitted:
            out += emitted
        node2, emitted2, bad2 = table[(node << 4) | (byte & 0xF)]
        if emitted2:
            out += emitted2
        if bad or bad2:
            raise HpackError("a Huffman-coded string contains EOS")
        node = node2
    if not _CAN_END[node]:
        raise HpackError("a Huffman-coded string ends in padding that is not the EOS prefix")
    return bytes(out)


def _integer(data: bytes, i: int, prefix: int) -> tuple[int, int]:
    """The integer whose first byte is ``data[i]`` with an N-bit prefix, and where the next field starts."""
    limit = (1 << prefix) - 1
    value = data[i] & limit
    i += 1
    if value < limit:
        return value, i
    shift = 0
    while True:
        if i >= len(data):
            raise HpackError("a header block ends inside an integer")
        byte = data[i]
        i += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i
        if shift > 28:
            raise HpackError("an integer in a header block is too large")


def encode_integer(value: int, prefix: int, first: int = 0) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Decoder:
    """One connection's decoding context: its dynamic table lives as long as the connection."""

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self.max_table_size = max_table_size  # what this side's SETTINGS_HEADER_TABLE_SIZE allows
        self.table_size = max_table_size  # what the encoder last chose, up to the maximum
        self._dynamic: deque[tuple[str, str]] = deque()
        self._size = 0

    def decode(self, block: bytes, max_list_size: int = MAX_HEADER_LIST) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        size = 0
        i, end = 0, len(block)
        while i < end:
            byte = block[i]
            if byte & 0x80:  # indexed field
                index, i = _integer(block, i, 7)
                header = self._entry(index)
            elif byte & 0x40:  # literal, added to the dynamic table
                name, value, i = self._literal(block, i, 6)
                header = (name, value)
                self._add(name, value)
            elif byte & 0x20:  # dynamic table size update
                table_size, i = _integer(block, i, 5)
                if table_size > self.max_table_size:
                    raise HpackError(f"a table size update to {table_size} exceeds the {self.max_table_size} "
                                     f"allowed")
                self.table_size = table_size
                self._evict()
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                name, value, i = self._literal(block, i, 4)
                header = (name, value)
            size += len(header[0]) + len(header[1]) + 32
            if size <= max_list_size:
                headers.append(header)
        if size > max_list_size:
            raise HeaderListTooLarge(f"{size} bytes of headers, over the {max_list_size} allowed")
        return headers

    def _entry(self, index: int) -> tuple[str, str]:
        if 0 < index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        dynamic = index - len(STATIC_TABLE) - 1
        if 0 <= dynamic < len(self._dynamic):
            return self._dynamic[dynamic]
        raise HpackError(f"header index {index} is not in the table ({len(STATIC_TABLE) + len(self._dynamic)} "
                         f"entries)")

    def _literal(self, block: bytes, i: int, prefix: int) -> tuple[str, str, int]:
        index, i = _integer(block, i, prefix)
        if index:
            name = self._entry(index)[0]
        else:
            name, i = self._string(block, i)
        value, i = self._string(block, i)
        return name, value, i

    @staticmethod
    def _string(block: bytes, i: int) -> tuple[str, int]:
        if i >= len(block):
            raise HpackError("a header block ends before a string")
        huffman = block[i] & 0x80
        length, i = _integer(block, i, 7)
        if i + length > len(block):
            raise HpackError(f"a header string of {length} bytes runs past the end of its block")
        raw = block[i:i + length]
        return (huffman_decode(raw) if huffman else raw).decode("latin-1"), i + length

    def _add(self, name: str, value: str) -> None:
        self._dynamic.appendleft((name, value))
        self._size += len(name) + len(value) + 32
        self._evict()

    def _evict(self) -> None:
        while self._size > self.table_size and self._dynamic:
            name, value = self._dynamic.pop()
            self._size -= len(name) + len(value) + 32


def encode_literal(name: bytes, value: bytes) -> bytes:
    """One header as a literal without indexing, its name a new name: the peer's table is never touched."""
    return b"\x00" + encode_integer(len(name), 7) + name + encode_integer(len(value), 7) + value


def encode(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(encode_literal(name, value) for name, value in headers)
