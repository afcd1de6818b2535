"""Test-support helpers shared by the unit, conformance and fuzz tests (import as ``support.x``)."""
