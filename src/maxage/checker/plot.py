"""A PNG histogram of the staleness distribution per read mode (zlib + struct, no dependency).

x: staleness in seconds (0 .. max(1.5 x bound, largest value)), 40 bins; y: share of the
mode's reads on a log scale (so a handful of stale reads stays visible next to the
zero bin). One colour per mode; a red vertical line marks the smallest bound.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping, Sequence

W, H = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 40
COLORS = {"bounded": (38, 110, 200), "session": (40, 160, 80), "strong": (150, 70, 180)}
_FONT = {  # 3x5 glyphs, rows top to bottom
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "s": "000011110001110",
    "%": "101001010100101", "-": "000000111000000", "e": "000111111100111", "=": "000111000111000",
    "b": "100100111101111", "n": "000110101101101", "d": "001001111101111", "o": "000111101101111",
    "u": "000101101101111", "t": "010111010010011", "r": "000111100100100", "g": "000111101011110",
    "S": "111100111001111", "x": "000101010101000", "y": "000101111001110", " ": "000000000000000",
    "a": "000011101101011", "l": "110010010010111", "i": "010000010010010", "m": "000111111101101",
    "c": "000111100100111", "p": "000111101111100",
}  # fmt: skip


class Canvas:
    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def rect(self, x0: int, y0: int, x1: int, y1: int, rgb: tuple[int, int, int]) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.w, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.h, max(y0, y1))
        row = bytes(rgb) * (x1 - x0)
        for y in range(y0, y1):
            i = (y * self.w + x0) * 3
            self.px[i : i + len(row)] = row

    def text(
        self, x: int, y: int, s: str, rgb: tuple[int, int, int] = (0, 0, 0), scale: int = 2
    ) -> None:
        for ch in s:
            glyph = _FONT.get(ch, _FONT[" "])
            for k, bit in enumerate(glyph):
                if bit == "1":
                    gx, gy = k % 3, k // 3
                    self.rect(
                        x + gx * scale,
                        y + gy * scale,
                        x + (gx + 1) * scale,
                        y + (gy + 1) * scale,
                        rgb,
                    )
            x += 4 * scale

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.px[y * self.w * 3 : (y + 1) * self.w * 3]) for y in range(self.h)
        )

        def chunk(tag: bytes, data: bytes) -> bytes:
            return (
                struct.pack(">I", len(data))
                + tag
                + data
                + struct.pack(">I", zlib.crc32(tag + data))
            )

        ihdr = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def staleness_png(by_mode: Mapping[str, Sequence[float]], bound: float) -> bytes:
    c = Canvas(W, H)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    top_value = max([bound * 1.5, 0.001] + [max(v) for v in by_mode.values() if v])
    bins = 40
    modes = [m for m in ("bounded", "session", "strong") if by_mode.get(m)]
    c.rect(LEFT, TOP + ph, LEFT + pw, TOP + ph + 2, (0, 0, 0))
    c.rect(LEFT - 2, TOP, LEFT, TOP + ph, (0, 0, 0))
    decades = 6  # 1e-6 .. 1 share of reads
    for d in range(decades + 1):
        y = TOP + int(ph * d / decades)
        c.rect(LEFT, y, LEFT + pw, y + 1, (225, 225, 225))
        c.text(4, y - 4, f"1e-{d}" if d else "1", scale=2)
    for mi, mode in enumerate(modes):
        values = by_mode[mode]
        counts = [0] * bins
        for v in values:
            counts[min(bins - 1, int(v / top_value * bins))] += 1
        bw = pw / bins / max(1, len(modes))
        for b, n in enumerate(counts):
            if not n:
                continue
            share = n / len(values)
            height = int(ph * max(0.0, 1 + math.log10(share) / decades))
            x0 = LEFT + int(b * pw / bins + mi * bw)
            c.rect(
                x0,
                TOP + ph - max(2, height),
                x0 + max(1, int(bw) - 1),
                TOP + ph,
                COLORS.get(mode, (90, 90, 90)),
            )
        c.rect(LEFT + 10 + mi * 150, 8, LEFT + 22 + mi * 150, 20, COLORS.get(mode, (90, 90, 90)))
        c.text(LEFT + 28 + mi * 150, 9, f"{mode} n={len(values)}", scale=2)
    if bound > 0:
        xb = LEFT + int(bound / top_value * pw)
        c.rect(xb, TOP, xb + 2, TOP + ph, (220, 30, 30))
        c.text(xb + 4, TOP + 4, f"S={bound:g}s", (220, 30, 30), scale=2)
    for k in range(5):
        val = top_value * k / 4
        x = LEFT + int(pw * k / 4)
        c.rect(x, TOP + ph, x + 1, TOP + ph + 6, (0, 0, 0))
        c.text(x - 8, TOP + ph + 10, f"{val:.2f}s", scale=2)
    c.text(LEFT + pw // 2 - 80, H - 14, "staleness s", scale=2)
    return c.png()
