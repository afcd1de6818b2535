"""Pod identities: the operator's CA, CSR decisions, issuance and rotation.

Everything here is pure: Kubernetes objects come in as dicts, the clock as ``now``
(timezone-aware UTC) and randomness as an injectable ``rng``; the kopf handlers and the
small HTTPS endpoint (``server.py``) only gather inputs and write results. The sidecar
side of the exchange (key generation, the CSR) lives in ``kipsec_sidecar.identity``:
the private key never leaves the pod.
"""
