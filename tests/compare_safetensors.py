#!/usr/bin/env python3
"""Compares the tensors of two Hugging Face model folders (model.safetensors or its shards listed in
model.safetensors.index.json), F32/BF16/F16, with the standard library only. Prints the largest
absolute and relative difference (relative to the tensor's largest magnitude) and the tensor where
each occurs; exit 1 when a tensor is missing, differs in shape, or differs by more than --rtol.
usage: compare_safetensors.py A_DIR B_DIR [--rtol 1e-6]"""
import argparse
import array
import json
import os
import struct
import sys


def tensors(folder):
    """{name: (dtype, shape, list of floats)} of every safetensors file of `folder`."""
    index = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    out = {}
    for f in files:
        with open(os.path.join(folder, f), "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
            data = fh.read()
        for name, t in header.items():
            if name == "__metadata__":
                continue
            b, e = t["data_offsets"]
            raw = data[b:e]
            if t["dtype"] == "F32":
                vals = array.array("f", raw)
            elif t["dtype"] in ("BF16", "F16"):
                half = array.array("H", raw)
                if t["dtype"] == "BF16":
                    vals = array.array("f", struct.pack(f"<{len(half)}I", *[h << 16 for h in half]))
                else:
                    vals = array.array("f", [struct.unpack("<e", struct.pack("<H", h))[0] for h in half])
            else:
                raise SystemExit(f"{folder}/{f}: {name}: dtype {t['dtype']} is not compared")
            out[name] = (t["dtype"], t["shape"], vals)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rtol", type=float, default=1e-6)
    args = p.parse_args()
    a, b = tensors(args.a), tensors(args.b)
    ok = True
    if a.keys() != b.keys():
        print(f"different tensors: only in {args.a}: {sorted(a.keys() - b.keys())}; only in {args.b}: {sorted(b.keys() - a.keys())}")
        ok = False
    worst_abs, worst_rel, where_abs, where_rel = 0.0, 0.0, "", ""
    for name in sorted(a.keys() & b.keys()):
        (da, sa, va), (db, sb, vb) = a[name], b[name]
        if sa != sb:
            print(f"{name}: shape {sa} vs {sb}")
            ok = False
            continue
        scale = max(max((abs(x) for x in va), default=0.0), 1e-30)
        d = max((abs(x - y) for x, y in zip(va, vb)), default=0.0)
        if d > worst_abs:
            worst_abs, where_abs = d, name
        if d / scale > worst_rel:
            worst_rel, where_rel = d / scale, name
    print(f"{len(a)} tensors; largest difference {worst_abs:.3g} absolute ({where_abs or '-'}), "
          f"{worst_rel:.3g} relative to the tensor's largest magnitude ({where_rel or '-'}); bound {args.rtol:g}")
    return 0 if ok and worst_rel <= args.rtol else 1


if __name__ == "__main__":
    sys.exit(main())
