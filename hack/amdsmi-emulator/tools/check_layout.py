#!/usr/bin/env python3
"""Compare the emulator's C structs with the ctypes structs of the installed amdsmi wheel.

The wrapper module is the ABI the Python package really uses. It is loaded on its own (not through
``import amdsmi``) against the freshly built library, which also proves that every symbol it binds
is exported. Then, for every struct that ``layout-dump`` describes, sizeof, each field's offset and
size, and (unless the C side is marked partial) the set of field names including the PADDING_n
ones must match. Any difference fails with a list of them.

Usage: check_layout.py --dump build/bin/layout-dump --lib-dir build/lib
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_stubs import find_wrapper


def load_wrapper(lib_dir: Path, wrapper: Path):
    # find_smi_library() prefers ROCM_HOME over ROCM_PATH: point both at the emulator.
    os.environ["ROCM_PATH"] = os.environ["ROCM_HOME"] = str(lib_dir.parent)
    spec = importlib.util.spec_from_file_location("amdsmi_wrapper_under_check", wrapper)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(module, layout: dict) -> list[str]:
    problems = []
    for cls_name, c_side in layout.items():
        cls = getattr(module, cls_name, None)
        if cls is None:
            problems.append(f"{cls_name}: no such ctypes class in the wrapper")
            continue
        if ctypes.sizeof(cls) != c_side["size"]:
            problems.append(f"{cls_name}: sizeof C {c_side['size']} != ctypes {ctypes.sizeof(cls)}")
        ctypes_fields = [f[0] for f in cls._fields_]
        for name, (offset, size) in c_side["fields"].items():
            if name not in ctypes_fields:
                problems.append(f"{cls_name}.{name}: not a ctypes field")
                continue
            desc = getattr(cls, name)
            if desc.offset != offset or desc.size != size:
                ours, theirs = f"{offset}/{size}", f"{desc.offset}/{desc.size}"
                problems.append(f"{cls_name}.{name}: C offset/size {ours} != ctypes {theirs}")
        if not c_side["partial"]:
            missing = [f for f in ctypes_fields if f not in c_side["fields"]]
            if missing:
                problems.append(f"{cls_name}: fields missing on the C side: {', '.join(missing)}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", type=Path, required=True, help="the layout-dump binary")
    parser.add_argument("--lib-dir", type=Path, required=True, help="folder holding libamd_smi.so")
    parser.add_argument(
        "--wrapper", type=Path, help="amdsmi_wrapper.py (default: installed package)"
    )
    args = parser.parse_args()

    layout = json.loads(
        subprocess.run([str(args.dump)], check=True, capture_output=True, text=True).stdout
    )
    wrapper = args.wrapper or find_wrapper()
    try:
        module = load_wrapper(args.lib_dir.resolve(), wrapper)
    except (AttributeError, KeyError, OSError) as exc:
        print(
            f"check_layout: {wrapper} does not load against {args.lib_dir}: {exc!r}",
            file=sys.stderr,
        )
        return 1
    problems = compare(module, layout)
    if problems:
        print(
            "check_layout: C structs differ from the amdsmi wheel's ctypes structs:",
            file=sys.stderr,
        )
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"check_layout: {len(layout)} structs match {wrapper.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
