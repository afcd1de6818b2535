"""Sans-IO protocol cores: pure functions and state machines over bytes and a given ``now``.

Import-linter (``pyproject.toml``) forbids this package from importing asyncio, socket,
time, kopf, kubernetes or pyroute2, so the rule of DESIGN.md layer 1 is checked, not
remembered.
"""
