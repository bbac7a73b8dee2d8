#!/usr/bin/env python3
"""Generate the MISO byte streams in this folder (see README.md for why they are generated).

Each file is what an MCP3x08 returns on MISO for consecutive 3-byte single-ended conversions,
frame after frame, reading channel 0 (voltage sensor) then channel 1 (current clamp), at 4000
frames per second with a 1 MHz SPI clock. Each conversion samples the signal at its own instant
(channel 1 is read 24 us after channel 0), as the real chip does, so the stream carries the
inter-channel skew the source must correct. Bits the chip leaves undriven (high impedance) are
returned as 1, as with a pull-up on MISO.

Run: python3 generate.py  (writes the .miso files next to this script; deterministic)
"""
import math
import os

FS = 4000.0          # frames per second
SPI_HZ = 1_000_000   # SPI clock
T_CONV = 24 / SPI_HZ # one 3-byte conversion
SECONDS = 1.0
F = 50.0
V_RMS, I_RMS, PF = 230.0, 5.0, 0.8

def signal(ch, t):
    w = 2 * math.pi * F * t
    if ch == 0:
        return V_RMS * math.sqrt(2) * math.sin(w)
    return I_RMS * math.sqrt(2) * math.sin(w - math.acos(PF))

def mcp3008_miso(code):
    # Byte 1: 5 undriven bits (1), null bit (0) at bit 2, B9 B8; byte 2: B7..B0.
    return bytes([0xFF, 0b11111000 | (code >> 8), code & 0xFF])

def mcp3208_miso(code):
    # Byte 1: 3 undriven bits (1), null bit (0) at bit 4, B11..B8; byte 2: B7..B0.
    return bytes([0xFF, 0b11100000 | (code >> 8), code & 0xFF])

def stream(bits, scales, miso):
    full = (1 << bits) - 1
    mid = 1 << (bits - 1)
    out = bytearray()
    for k in range(int(SECONDS * FS)):
        for ch, scale in enumerate(scales):
            t = k / FS + ch * T_CONV
            code = round(mid + signal(ch, t) / scale)
            out += miso(max(0, min(full, code)))
    return bytes(out)

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "mcp3208_v_i_4khz.miso"), "wb") as f:
    f.write(stream(12, (0.25, 0.005), mcp3208_miso))
with open(os.path.join(here, "mcp3008_v_i_4khz.miso"), "wb") as f:
    f.write(stream(10, (1.0, 0.02), mcp3008_miso))
