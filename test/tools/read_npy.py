#!/usr/bin/env python3
"""Open a .npy with numpy (np.load) and print a compact JSON summary.

Usage: python3 read_npy.py FILE
Prints {"shape": [...], "dtype": "float32", "fortranOrder": bool, "sum": float,
        "first": [first up-to-5 values of the flattened array], "finite": bool}
Exit code 2 if numpy cannot load the file.
"""
import json
import math
import sys

import numpy as np


def _num(v):
    """JSON has no NaN/Infinity: emit them as strings (same convention as read_arrow.py)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: read_npy.py FILE\n")
        return 2
    try:
        a = np.load(argv[1], allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - report any load failure
        sys.stderr.write("read_npy: error: %s\n" % e)
        return 2
    flat = a.ravel()
    out = {
        "shape": list(a.shape),
        "dtype": str(a.dtype),
        "fortranOrder": bool(np.isfortran(a)) if a.ndim > 1 else False,
        "sum": float(flat.astype(np.float64).sum()) if flat.size else 0.0,
        "first": [_num(v.item()) for v in flat[:5]],
        "finite": bool(np.isfinite(flat).all()) if flat.dtype.kind == "f" else True,
    }
    out["sum"] = _num(out["sum"])
    json.dump(out, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
