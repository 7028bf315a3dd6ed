"""Reads back the pixels of a PNG a browser wrote (8-bit greyscale, RGB or RGBA, not interlaced), to tell a
rendered page from a blank one without an imaging library."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Colour type -> channels per pixel.
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def png_pixels(path: Path) -> np.ndarray:
    """The image as an array of shape (height, width, channels), values 0-255."""
    data = path.read_bytes()
    assert data.startswith(SIGNATURE), f"{path} is not a PNG"
    position, header, compressed = len(SIGNATURE), b"", []
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            compressed.append(body)
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in CHANNELS and interlace == 0, f"{path}: unsupported PNG layout"
    channels = CHANNELS[colour]
    raw = np.frombuffer(zlib.decompress(b"".join(compressed)), dtype=np.uint8).reshape(height, width * channels + 1)
    return _unfiltered(raw, channels=channels).reshape(height, width, channels)


def _unfiltered(raw: np.ndarray, *, channels: int) -> np.ndarray:
    """Undo each scanline's filter (PNG specification, section 9)."""
    rows = np.zeros((raw.shape[0], raw.shape[1] - 1), dtype=np.uint8)
    above = np.zeros(raw.shape[1] - 1, dtype=np.uint8)
    for index, (kind, line) in enumerate(zip(raw[:, 0], raw[:, 1:])):
        if kind == 0:
            rows[index] = line
        elif kind == 1:
            # Each byte adds the reconstructed byte one pixel to its left: a running sum per channel.
            rows[index] = np.cumsum(line.reshape(-1, channels), axis=0, dtype=np.uint64).reshape(-1) % 256
        elif kind == 2:
            rows[index] = line + above
        else:
            rows[index] = _sequential(line.tolist(), above.tolist(), kind=int(kind), channels=channels)
        above = rows[index]
    return rows


def _sequential(line: list[int], above: list[int], *, kind: int, channels: int) -> list[int]:
    """Average (3) and Paeth (4) lines, byte by byte: each depends on the reconstructed byte to its left."""
    out = [0] * len(line)
    for x, value in enumerate(line):
        left = out[x - channels] if x >= channels else 0
        if kind == 3:
            out[x] = (value + (left + above[x]) // 2) % 256
            continue
        upper_left = above[x - channels] if x >= channels else 0
        estimate = left + above[x] - upper_left
        distances = (abs(estimate - left), abs(estimate - above[x]), abs(estimate - upper_left))
        predictor = left if distances[0] <= distances[1] and distances[0] <= distances[2] else (
            above[x] if distances[1] <= distances[2] else upper_left)
        out[x] = (value + predictor) % 256
    return out
