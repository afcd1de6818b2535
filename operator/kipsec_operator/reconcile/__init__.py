"""Pure reconcile logic: Tunnels, pods and Secrets in; sidecar documents and status out.

Nothing here talks to Kubernetes: the kopf handlers gather a
:class:`~.cluster.Cluster` snapshot, call :func:`~.render.plan`,
:func:`~.affected.affected_pods` and :func:`~.status.tunnel_status`, and write what
they return.
"""
