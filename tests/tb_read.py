#!/usr/bin/env python3
"""Reads a TensorBoard event file without TensorFlow, TensorBoard or protobuf (standard library
only), to check xy's writer (health/tensorboard.cpp) against a reader that is not its own.

Checks every record's framing and both masked CRC32Cs, decodes each Event and prints one line per
item:
    version <file_version>
    start <step>                      (a SessionLog with status START)
    scalar <step> <tag> <value!r>     (a Summary value's simple_value, as a 32-bit float)
Exit 1 with one line naming the file and the offset on a bad record.

    usage: tb_read.py EVENT_FILE [--tensorboard]

With --tensorboard it instead prints the same "scalar" lines as TensorBoard's own EventAccumulator
reads them from the file's directory (after its purge on SessionLog START), sorted by tag and step;
exit 77 when the tensorboard package is not installed.
"""
import struct
import sys


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, i):
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def fields(buf):
    """Yields (field number, wire type, value) of a protobuf message: ints for varint, bytes for
    the fixed and length-delimited types."""
    i = 0
    while i < len(buf):
        k, i = varint(buf, i)
        field, wire = k >> 3, k & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wire)
        if i > len(buf):
            raise ValueError("truncated field %d" % field)
        yield field, wire, v


def records(data, path):
    off = 0
    while off < len(data):
        if off + 12 > len(data):
            raise ValueError("%s: offset %d: truncated record header" % (path, off))
        head = data[off:off + 8]
        (n,) = struct.unpack("<Q", head)
        (hcrc,) = struct.unpack("<I", data[off + 8:off + 12])
        if hcrc != masked(head):
            raise ValueError("%s: offset %d: bad length CRC" % (path, off))
        body = data[off + 12:off + 12 + n]
        if len(body) != n or off + 16 + n > len(data):
            raise ValueError("%s: offset %d: truncated record" % (path, off))
        (dcrc,) = struct.unpack("<I", data[off + 12 + n:off + 16 + n])
        if dcrc != masked(body):
            raise ValueError("%s: offset %d: bad data CRC" % (path, off))
        yield body
        off += 16 + n


def decode(path):
    out = []
    with open(path, "rb") as f:
        data = f.read()
    for body in records(data, path):
        step = 0
        items = []
        for field, wire, v in fields(body):
            if field == 2 and wire == 0:
                step = v - (1 << 64) if v >= 1 << 63 else v
            elif field == 3 and wire == 2:
                items.append(("version", v.decode()))
            elif field == 7 and wire == 2:  # SessionLog
                for f2, w2, s in fields(v):
                    if f2 == 1 and w2 == 0 and s == 1:
                        items.append(("start",))
            elif field == 5 and wire == 2:  # Summary
                for f2, w2, val in fields(v):
                    if f2 != 1 or w2 != 2:
                        continue
                    tag, x = None, None
                    for f3, w3, y in fields(val):
                        if f3 == 1 and w3 == 2:
                            tag = y.decode()
                        elif f3 == 2 and w3 == 5:
                            (x,) = struct.unpack("<f", y)
                    items.append(("scalar", tag, x))
        for it in items:
            if it[0] == "version":
                out.append("version %s" % it[1])
            elif it[0] == "start":
                out.append("start %d" % step)
            else:
                out.append("scalar %d %s %r" % (step, it[1], it[2]))
    return out


def with_tensorboard(path):
    import os
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        print("SKIPPED: the tensorboard package is not installed")
        sys.exit(77)
    acc = event_accumulator.EventAccumulator(os.path.dirname(os.path.abspath(path)))
    acc.Reload()
    lines = []
    for tag in sorted(acc.Tags()["scalars"]):
        for e in acc.Scalars(tag):
            lines.append("scalar %d %s %r" % (e.step, tag, e.value))
    return lines


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        print(__doc__.strip().split("\n\n")[2].strip(), file=sys.stderr)
        return 2
    try:
        lines = with_tensorboard(args[0]) if "--tensorboard" in args else decode(args[0])
    except (ValueError, OSError, UnicodeDecodeError) as e:
        print("tb_read.py: %s" % e, file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
