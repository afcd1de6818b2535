"""kipsec operator: Tunnel and TunnelCertificate resources into per-pod sidecar configuration.

``crds`` holds the one source of the custom resources, ``reconcile`` the pure functions
from cluster objects to sidecar documents and status, ``certificates`` the CA and the
CSR flow, ``webhook`` sidecar injection. The kopf handlers (thin wrappers over these)
are the next step of the operator issue. The import name is ``kipsec_operator`` so that
the folder ``operator/`` never shadows the stdlib module ``operator``.
"""
