"""``python -m allocbench_verl --list``: which AllocBench methods run inside verl, and why not."""
from __future__ import annotations

import argparse

from allocbench_verl.adapter import method_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m allocbench_verl",
                                     description="AllocBench's methods inside verl 0.9.1.")
    parser.add_argument("--list", action="store_true",
                        help="print every method with 'runs in verl' or why it is refused")
    args = parser.parse_args(argv)
    if not args.list:
        parser.print_help()
        return 0
    table = method_table()
    width = max(len(name) for name, _ in table)
    for name, verdict in table:
        print(f"{name:<{width}}  {verdict}")
    runs = sum(v == "runs in verl" for _, v in table)
    print(f"{runs} of {len(table)} methods run in verl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
