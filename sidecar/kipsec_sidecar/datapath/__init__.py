"""Datapaths: where negotiated SAs carry packets (DESIGN.md layer 2).

``base.Datapath`` is the one interface the daemon drives; ``userspace`` implements it with
a TUN device and ESP/AH applied in-process, ``kernel`` (later) with XFRM over netlink.
"""
