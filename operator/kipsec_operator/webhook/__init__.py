"""Sidecar injection: the mutating admission webhook and what happens when it is down.

``injection.mutate`` decides the JSON patch for one pod, ``admission`` wraps it in the
AdmissionReview v1 protocol, ``policy`` holds the failure policy and the detection of
pods that slipped through without a sidecar. All pure; the kopf handler only gathers
the namespace and the Tunnels and returns the response.
"""
