"""Write README's method table from the method registry (``boundary_xg.methods_table()``).

Run after registering a method: ``python scripts/update_readme.py`` (``--check``
only reports whether README is up to date, exit status 1 if not). The table sits
between the two ``methods-table`` markers in README.md; tests/test_api.py checks
that it equals the generated one.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

import boundary_xg  # noqa: E402

START = "<!-- methods-table: generated from the registry by scripts/update_readme.py -->"
END = "<!-- /methods-table -->"


def split(text: str):
    """README's text before the table, the table, and after it (ValueError without the markers)."""
    head, sep, rest = text.partition(START)
    table, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"README.md lacks the markers {START!r} ... {END!r}")
    return head + START + "\n", table.strip("\n") + "\n", "\n" + END + tail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check; exit status 1 if README is stale")
    args = ap.parse_args(argv)
    path = os.path.join(ROOT, "README.md")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    head, table, tail = split(text)
    fresh = boundary_xg.methods_table()
    if table == fresh:
        print("README.md's method table is up to date")
        return 0
    if args.check:
        print("README.md's method table differs from the registry; run python scripts/update_readme.py")
        return 1
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(head + fresh + tail)
    print("wrote README.md's method table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
