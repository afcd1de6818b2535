"""kipsec's local lab: a cluster stand-in on one Linux machine (`kipsec lab …`).

The emulated Kubernetes API (:mod:`.apiserver`), the real operator, a scheduler and
kubelet stand-in (:mod:`.kubelet`) that gives each pod a network namespace and runs its
injected sidecar for real. docs/lab.md describes what it is and is not.
"""
