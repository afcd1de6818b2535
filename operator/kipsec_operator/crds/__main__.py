"""`python -m kipsec_operator.crds`: regenerate the chart's CRDs and the CRD reference docs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .reference import crd_reference, update_document
from .render import write

ROOT = Path(__file__).resolve().parents[3]
"""The repository root (this file is operator/kipsec_operator/crds/__main__.py)."""
CRD_DIR = ROOT / "charts" / "kipsec" / "crds"
DOCS = ROOT / "docs" / "operator.md"
REFERENCE = ROOT / "docs" / "crd-reference.md"


def main(argv: list[str]) -> int:
    """Write the CRDs (into the directory given, else the chart's), docs/crd-reference.md
    and the tables of docs/operator.md. A parser, so `--help` prints usage instead of
    becoming an output directory."""
    parser = argparse.ArgumentParser(prog="python -m kipsec_operator.crds", description=__doc__)
    parser.add_argument(
        "directory", nargs="?", type=Path, default=CRD_DIR, help="where the CRD files go"
    )
    args = parser.parse_args(argv)
    for path in write(args.directory):
        print(path)
    if DOCS.exists():
        DOCS.write_text(update_document(DOCS.read_text(encoding="utf-8")), encoding="utf-8")
        print(DOCS)
        REFERENCE.write_text(crd_reference(), encoding="utf-8")
        print(REFERENCE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
