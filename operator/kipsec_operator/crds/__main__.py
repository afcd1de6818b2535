"""`python -m kipsec_operator.crds`: regenerate the chart's CRDs and the CRD reference docs."""

from __future__ import annotations

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
    """Write the CRDs (into `argv[0]` if given), docs/crd-reference.md and the tables of
    docs/operator.md."""
    for path in write(Path(argv[0]) if argv else CRD_DIR):
        print(path)
    if DOCS.exists():
        DOCS.write_text(update_document(DOCS.read_text(encoding="utf-8")), encoding="utf-8")
        print(DOCS)
        REFERENCE.write_text(crd_reference(), encoding="utf-8")
        print(REFERENCE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
