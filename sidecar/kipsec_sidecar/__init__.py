"""kipsec sidecar: the per-pod IPsec agent.

``kipsec_sidecar.core`` holds the sans-IO protocol cores (IKEv2, ESP, AH, the SA and
policy databases). They never open a socket, read a clock or touch Kubernetes; the
daemon layers above them feed bytes and time in and act on the events they return.
"""

__version__ = "0.1.0"
