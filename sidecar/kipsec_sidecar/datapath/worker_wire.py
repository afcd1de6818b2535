"""What the daemon and its outbound worker process say to each other (see :mod:`.split`).

One message per datagram on an ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair the daemon
creates and hands to the worker it spawns (:func:`socket.socketpair`; nothing else can
connect to it). A message is a pickled ``dict``: both ends are the same installed code,
started by the same user, and the channel is private to them, so pickle's trust model
(never unpickle what a stranger wrote) holds. Messages carry SA keys: they are never
logged.

An outbound SA crosses as the keyword arguments of :class:`IpsecSa` (:func:`sa_fields`)
plus the sequence numbers the worker may use (``next_seq`` .. ``lease_end``).
"""

from __future__ import annotations

import pickle
import socket
from typing import Any

from ..core.ipsec_sa import IpsecSa

#: Largest message (a peer policy with many selectors stays far below).
MAX_MESSAGE = 1 << 20
#: Sequence numbers granted per lease: the daemon records the end before the worker may
#: use any of them, so a worker that dies never makes its successor reuse one.
LEASE = 1 << 16

Message = dict[str, Any]


def send(sock: socket.socket, message: Message) -> None:
    """Send one message (blocking: the daemon's messages are few and small)."""
    sock.sendall(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def decode(data: bytes) -> Message:
    """One received datagram as a message (a dict)."""
    message = pickle.loads(data)  # noqa: S301 - private socket pair, see the module doc
    if not isinstance(message, dict):
        raise ValueError("worker message is not a dict")
    return message


def sa_fields(sa: IpsecSa) -> dict[str, Any]:
    """The keyword arguments that rebuild ``sa``'s keyed transforms in another process."""
    return {
        "spi": sa.spi,
        "src": sa.src,
        "dst": sa.dst,
        "protocol": sa.protocol,
        "mode": sa.mode,
        "encr_id": sa.encr_id,
        "encr_key": sa.encr_key,
        "encr_key_bits": sa.encr_key_bits,
        "integ_id": sa.integ_id,
        "integ_key": sa.integ_key,
        "esn": sa.esn,
        "udp_encap": sa.udp_encap,
        "local_ts": sa.local_ts,
        "remote_ts": sa.remote_ts,
    }
