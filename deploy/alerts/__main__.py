"""`python -m deploy.alerts`: write charts/kipsec/files/kipsec-alerts.yaml."""

from __future__ import annotations

import sys
from pathlib import Path

from .rules import ALERTS_FILE, write


def main(argv: list[str]) -> int:
    path = write(Path(argv[0]) if argv else ALERTS_FILE)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
