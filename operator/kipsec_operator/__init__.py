"""kipsec operator (kopf): Tunnel and TunnelCertificate resources into sidecar configuration.

Not built yet: see the operator issue. The folder exists so that the layout of DESIGN.md
and the import name (``kipsec_operator``, never the stdlib ``operator``) are fixed early.
"""
