"""The Tunnel and TunnelCertificate resources: models (the one source) and CRD manifests.

`models` holds the pydantic models; `openapi` turns them into structural schemas;
`render` builds the CRDs that `python -m kipsec_operator.crds` writes into the chart.
"""

from __future__ import annotations

from .models import API_VERSION, GROUP, VERSION, TunnelCertificateSpec, TunnelSpec
from .render import crds, tunnel_certificate_crd, tunnel_crd

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "TunnelCertificateSpec",
    "TunnelSpec",
    "crds",
    "tunnel_certificate_crd",
    "tunnel_crd",
]
