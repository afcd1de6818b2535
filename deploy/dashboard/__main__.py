"""`python -m deploy.dashboard`: write charts/kipsec/dashboards/kipsec.json."""

from __future__ import annotations

import sys
from pathlib import Path

from .build import DASHBOARD_FILE, write


def main(argv: list[str]) -> int:
    print(write(Path(argv[0]) if argv else DASHBOARD_FILE))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
