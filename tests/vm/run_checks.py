"""Run several ``*_checks.py`` scripts inside one VM boot and print their results together.

Not a pytest module: ``tests/vm/conftest.py`` boots the VM once per test session and
runs ``run_checks.py NAME:SECONDS...`` there (NAME is ``kernel_xfrm``,
``kernel_datapath`` or ``kernel_sidecar``: the script ``NAME_checks.py``, given at most
SECONDS). Each script runs as its own process,
one after the other, and prints its JSON between the result markers; this prints
``{NAME: result}`` between the same markers. A script that crashes, hangs past its share
of the time or prints no result becomes ``{"checks": {"NAME/ran": failed}}``, so the
tests report it instead of losing the whole boot.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BEGIN = "=====KIPSEC-VM-RESULT-BEGIN====="
END = "=====KIPSEC-VM-RESULT-END====="


def run(name: str, timeout: float) -> dict[str, Any]:
    script = HERE / f"{name}_checks.py"
    began = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        out, code = proc.stdout, proc.returncode
        tail = (proc.stdout + proc.stderr)[-4000:]
    except subprocess.TimeoutExpired as exc:
        out, code = "", None
        tail = f"timed out after {exc.timeout}s: {str(exc.stdout)[-2000:]}"
    begin, end = out.rfind(BEGIN), out.rfind(END)
    if begin < 0 or end < begin:
        return {"checks": {f"{name}/ran": {"ok": False, "detail": f"exit {code}: {tail}"}}}
    result: dict[str, Any] = json.loads(out[begin + len(BEGIN) : end])
    result["script_seconds"] = round(time.monotonic() - began, 1)
    return result


def main() -> None:
    results = {}
    for arg in sys.argv[1:]:
        name, _, seconds = arg.partition(":")
        results[name] = run(name, float(seconds or 300))
    print(BEGIN)
    print(json.dumps(results))
    print(END, flush=True)


if __name__ == "__main__":
    main()
