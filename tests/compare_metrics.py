#!/usr/bin/env python3
"""Compares the step and eval records of two metrics.jsonl files (standard library only).

usage: compare_metrics.py A B [--rtol R] [--keys loss,grad_norm] [--steps N]

Both must hold the same steps (with --steps, exactly steps 1..N) and evaluations; each listed key
of a step, and each evaluation's loss, must agree within rtol relative to B's value. A resumed
run's file holds every step once (docs/OPERATIONS.md), so either side may be one. Prints the
largest relative error per key and each mismatch; exit 0 when all agree, 1 otherwise.
"""
import argparse
import json
import sys


def records(path, keys):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if "eval" in r:
                    out[("eval", r["eval"], r["step"])] = {"loss": r["loss"]}
                elif "event" not in r and "step" in r:
                    out[("step", r["step"])] = {k: r[k] for k in keys}
    except (OSError, ValueError, KeyError) as e:
        sys.exit(print(f"{path}: cannot read its records: {e}") or 1)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--keys", default="loss,grad_norm")
    p.add_argument("--steps", type=int, default=0)
    args = p.parse_args()
    keys = args.keys.split(",")
    a, b = records(args.a, keys), records(args.b, keys)
    bad = 0
    if set(a) != set(b) or not a:
        print(f"different records: only in {args.a}: {sorted(set(a) - set(b))}; "
              f"only in {args.b}: {sorted(set(b) - set(a))}")
        bad += 1
    steps = sorted(k[1] for k in a if k[0] == "step")
    if args.steps and steps != list(range(1, args.steps + 1)):
        print(f"{args.a}: steps {steps}, not 1..{args.steps}")
        bad += 1
    worst = {}
    for k in sorted(set(a) & set(b), key=str):
        for key, y in b[k].items():
            x = a[k][key]
            rel = abs(x - y) / abs(y) if y != 0 else (0.0 if x == 0 else float("inf"))
            name = "eval loss" if k[0] == "eval" else key
            worst[name] = max(worst.get(name, 0.0), rel)
            if not rel <= args.rtol:
                print(f"{k}: {key} {x!r} vs {y!r}: relative error {rel:.3e}")
                bad += 1
    print(f"{len(set(a) & set(b))} records compared; max relative error: " +
          ", ".join(f"{n} {e:.3e}" for n, e in sorted(worst.items())) +
          f"; rtol {args.rtol:g}: {'mismatch' if bad else 'match'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
