#!/usr/bin/env python3
"""Writes a >= 1 GiB waveform CSV for bench/analyze_vs_pandas.sh: the bundled 8 kHz pump
recording (testdata/pump_230v_pf08_8khz.csv, 3 s = 150 whole cycles) repeated end to end with a
continuous, exactly uniform t column. Fast: per second of signal it substitutes the integer
seconds into a prepared 8000-line template with bytes.replace (no per-line Python work)."""
import sys

src, dst = sys.argv[1], sys.argv[2]
target = int(float(sys.argv[3])) if len(sys.argv) > 3 else 1 << 30

with open(src, "rb") as f:
    header = f.readline()
    rows = f.read().splitlines()
rate = 8000
assert header.strip() == b"t,v,i" and len(rows) % rate == 0, "expected the 8 kHz t,v,i pump file"
# One template per second of the source: b"@.<fraction>,<v>,<i>\n" with @ for the whole seconds.
templates = []
for s in range(len(rows) // rate):
    lines = []
    for k, row in enumerate(rows[s * rate:(s + 1) * rate]):
        _t, rest = row.split(b",", 1)
        lines.append(b"@.%06d,%s\n" % (k * 125, rest))
    templates.append(b"".join(lines))

written = 0
second = 0
with open(dst, "wb") as out:
    out.write(header)
    written += len(header)
    while written < target:
        block = templates[second % len(templates)].replace(b"@", str(second).encode())
        out.write(block)
        written += len(block)
        second += 1
print(f"{dst}: {written} bytes, {second * rate} rows, {second} s of signal")
