"""kopf's credentials: the same source as the operator's own client (:mod:`.kube`).

kopf asks its login handler at startup and again whenever the API server answers 401
(it then retries the request with what the handler returns). The handler loads a fresh
client configuration from the operator's :data:`~.kube.Credentials` -- the ServiceAccount
token file as the kubelet last rotated it, the kubeconfig context with its exec plugin,
or the lab's explicit URL -- and hands kopf the resulting server, CA, token or client
certificate. So kopf's watches and the operator's writes authenticate the same way.
"""

from __future__ import annotations

import kopf

from .kube import Credentials


async def connection_info(credentials: Credentials) -> kopf.ConnectionInfo:
    """What kopf connects with, loaded now from `credentials`."""
    configuration = await credentials.configuration()
    # The loaders keep "Bearer <token>" (or "Basic ...") under this key; asking through
    # the getter runs their refresh hook, as a request would.
    header = await configuration.get_api_key_with_prefix("BearerToken")
    scheme, _, token = (header or "").partition(" ")
    assert configuration.host is not None
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        proxy_url=configuration.proxy,  # a kubeconfig's proxy-url
    )
