"""Checks of a sidecar configuration that span several fields.

Pydantic validates each field on its own (:mod:`.model`); what needs two or more — peer
names unique, AH never UDP-encapsulated, a per-peer lifetime override consistent with
the document's values, transport-mode selectors inside the endpoints, manual key
lengths matching their algorithms — is checked here, after the model was built, and
reported with the path of the field the user should change. :func:`check` returns the
problems; :func:`kipsec_sidecar.config.load.load_config_data` raises them together.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from .errors import FieldError, join_path
from .model import Identity, Lifetimes, Manual, Peer, Service, SidecarConfig, TrafficSelector
from .proposals import ManualAlgorithms, ProposalError, parse_ike_proposal, parse_manual_algorithms

IPV6_MIN_MTU = 1280


def check(config: SidecarConfig) -> list[FieldError]:
    """Every cross-field problem of `config`, in document order (empty when it is valid)."""
    errors: list[FieldError] = []
    errors += _check_lifetimes(
        config.lifetimes, "lifetimes", set(config.lifetimes.model_fields_set)
    )
    errors += _check_identity_for_auth(config, None, config.local.identity, "local.identity")
    errors += _check_mtu(config)
    errors += _check_datapath_workers(config)
    seen_names: dict[str, int] = {}
    seen_endpoints: dict[tuple[str, int], int] = {}
    for index, peer in enumerate(config.peers):
        base = join_path("peers", index)
        if peer.name in seen_names:
            errors.append(
                FieldError(
                    join_path(base, "name"),
                    f"duplicate peer name {peer.name!r} (also peers[{seen_names[peer.name]}])",
                )
            )
        seen_names.setdefault(peer.name, index)
        endpoint = (peer.address, peer.port)
        if endpoint in seen_endpoints:
            errors.append(
                FieldError(
                    join_path(base, "address"),
                    f"{peer.address} port {peer.port} is also peers[{seen_endpoints[endpoint]}]: "
                    "one peer per address and port",
                )
            )
        seen_endpoints.setdefault(endpoint, index)
        errors += _check_peer(config, peer, base)
    errors += _check_services(config.services)
    return errors


def _check_services(services: list[Service]) -> Iterator[FieldError]:
    """Names unique, one ClusterIP per IP version, each endpoint reachable from a ClusterIP
    of its version, and each ClusterIP:port/protocol (or endpoint of a port) only once:
    two NAT rules for the same destination would leave one of them dead."""
    names: dict[str, int] = {}
    destinations: dict[tuple[str, int, str], str] = {}
    for index, service in enumerate(services):
        base = join_path("services", index)
        if service.name in names:
            yield FieldError(
                join_path(base, "name"),
                f"duplicate service name {service.name!r} (also services[{names[service.name]}])",
            )
        names.setdefault(service.name, index)
        versions: dict[int, int] = {}
        for ip_index, cluster_ip in enumerate(service.cluster_ips):
            version = ipaddress.ip_address(cluster_ip).version
            if version in versions:
                yield FieldError(
                    join_path(base, "clusterIPs", ip_index),
                    f"a second IPv{version} ClusterIP: give at most one per IP version",
                )
            versions.setdefault(version, ip_index)
        for port_index, port in enumerate(service.ports):
            at = join_path(base, "ports", port_index)
            for cluster_ip in service.cluster_ips:
                key = (cluster_ip, port.port, port.protocol)
                if key in destinations:
                    yield FieldError(
                        join_path(at, "port"),
                        f"{cluster_ip} {port.protocol}/{port.port} is also {destinations[key]}",
                    )
                destinations.setdefault(key, at)
            seen: set[str] = set()
            for endpoint_index, endpoint in enumerate(port.endpoints):
                where = join_path(at, "endpoints", endpoint_index, "address")
                version = ipaddress.ip_address(endpoint.address).version
                if version not in versions:
                    yield FieldError(
                        where,
                        f"an IPv{version} endpoint, but the service has no IPv{version} ClusterIP",
                    )
                if endpoint.address in seen:
                    yield FieldError(where, f"{endpoint.address} is listed twice for this port")
                seen.add(endpoint.address)


def _check_ikev2_proposals(config: SidecarConfig, peer: Peer, base: str) -> Iterator[FieldError]:
    """SHA-1 in an IKE proposal is an IKEv1 peer's explicit opt-in (the model admits it
    per string); an IKEv2 peer gets the refusal it always got, at the field it comes from."""
    own = peer.proposals is not None and "ike" in peer.proposals.model_fields_set
    where = join_path(base, "proposals", "ike") if own else join_path("proposals", "ike")
    for index, text in enumerate(config.proposals_for(peer).ike):
        try:
            parse_ike_proposal(text)
        except ProposalError as exc:
            yield FieldError(join_path(where, index), f"{exc} ({base} {peer.name} uses IKEv2)")


def _check_peer(config: SidecarConfig, peer: Peer, base: str) -> Iterator[FieldError]:
    local_address = config.local_address_for(peer)
    if local_address is None:
        version = ipaddress.ip_address(peer.address).version
        yield FieldError(
            join_path(base, "address"),
            f"an IPv{version} peer, but local.addresses has no IPv{version} address",
        )
    if peer.keying == "ike" and config.auth_for(peer) is None:
        yield FieldError(
            "local.auth",
            f"required: {base} ({peer.name}) uses IKE and has no auth of its own",
        )
    auth = config.auth_for(peer)
    if (
        peer.ike_version == 2
        and auth is not None
        and auth.certificate is not None
        and auth.certificate.public_key_encryption is not None
    ):
        where = join_path(base, "auth") if peer.auth is not None else "local.auth"
        yield FieldError(
            join_path(where, "certificate", "publicKeyEncryption"),
            f"IKEv1 only: {base} ({peer.name}) uses IKEv2 (set ikeVersion: 1, or remove it)",
        )
    if peer.keying == "ike" and peer.ike_version == 2:
        yield from _check_ikev2_proposals(config, peer, base)
    if peer.keying == "manual" and peer.manual is None:
        yield FieldError(join_path(base, "manual"), "required with keying: manual")
    if peer.keying == "ike" and peer.manual is not None:
        yield FieldError(join_path(base, "manual"), "only allowed with keying: manual")
    if peer.keying == "manual":
        for key, value in (("closeAction", peer.close_action), ("dpdAction", peer.dpd_action)):
            if value is not None:
                yield FieldError(
                    join_path(base, key),
                    "only allowed with keying: ike (manual SAs are never deleted or "
                    "re-established)",
                )
    if peer.keying == "manual" and peer.manual is not None:
        yield from _check_manual(peer.manual, peer, join_path(base, "manual"))
    if peer.protocol == "ah" and config.encapsulation_for(peer) == "udp":
        where = "encapsulation" if peer.encapsulation is not None else "protocol"
        yield FieldError(
            join_path(base, where),
            "AH cannot be UDP-encapsulated: it authenticates the IP addresses a NAT rewrites; "
            "set encapsulation: raw for this peer (or use protocol: esp)",
        )
    if peer.lifetimes is not None:
        merged = config.lifetimes_for(peer)
        yield from _check_lifetimes(
            merged, join_path(base, "lifetimes"), set(peer.lifetimes.model_fields_set)
        )
    yield from _check_identity_for_auth(config, peer, peer.identity, join_path(base, "identity"))
    if local_address is not None:
        yield from _check_selectors(peer, local_address, join_path(base, "trafficSelectors"))


def _check_identity_for_auth(
    config: SidecarConfig, peer: Peer | None, identity: Identity | None, path: str
) -> Iterator[FieldError]:
    """keyId identities cannot be named by a certificate (RFC 4945): PSK only."""
    if identity is None or identity.key_id is None:
        return
    auths = [config.auth_for(peer)] if peer is not None else [config.local.auth]
    if peer is None:
        auths += [config.auth_for(p) for p in config.peers]
    if any(a is not None and a.certificate is not None for a in auths):
        yield FieldError(
            join_path(path, "keyId"),
            "a keyId identity only works with PSK authentication; with certificates use "
            "fqdn, address, email or dn",
        )


def _check_lifetimes(lifetimes: Lifetimes, path: str, written: set[str]) -> Iterator[FieldError]:
    """rekeyMargin must leave a positive rekey time inside both lifetimes."""
    for field, alias in (("child_sa", "childSa"), ("ike_sa", "ikeSa")):
        life = getattr(lifetimes, field)
        if not 0 < lifetimes.rekey_margin < life:
            at = "rekeyMargin" if "rekey_margin" in written or field not in written else alias
            yield FieldError(
                join_path(path, at),
                f"rekeyMargin ({lifetimes.rekey_margin:g} s) must be positive and shorter "
                f"than {alias} ({life:g} s)",
            )


def _check_mtu(config: SidecarConfig) -> Iterator[FieldError]:
    if config.mtu is None or config.mtu >= IPV6_MIN_MTU:
        return
    if any(ipaddress.ip_address(a).version == 6 for a in config.local.addresses):
        yield FieldError("mtu", f"IPv6 needs an MTU of at least {IPV6_MIN_MTU}")


def _check_datapath_workers(config: SidecarConfig) -> Iterator[FieldError]:
    """``datapathWorkers: 2`` sends from one 4500 socket: ESP in UDP, one local address."""
    if config.datapath_workers != 2:
        return
    if len(config.local.addresses) != 1:
        yield FieldError("datapathWorkers", "2 needs exactly one local address")
    for index, peer in enumerate(config.peers):
        if config.encapsulation_for(peer) != "udp":
            yield FieldError(
                "datapathWorkers",
                f"2 carries ESP in UDP only; peers[{index}] uses encapsulation "
                f"{config.encapsulation_for(peer)}",
            )


def _check_manual(manual: Manual, peer: Peer, path: str) -> Iterator[FieldError]:
    try:
        algorithms = parse_manual_algorithms(manual.encryption, manual.integrity, peer.protocol)
    except ProposalError as exc:
        yield FieldError(join_path(path, exc.field), str(exc))
        return
    if manual.keys is not None:
        keys = {
            "encryptionIn": manual.keys.encryption_in,
            "encryptionOut": manual.keys.encryption_out,
            "integrityIn": manual.keys.integrity_in,
            "integrityOut": manual.keys.integrity_out,
        }
        lengths = {
            k: None if v is None else len(v.get_secret_value()) // 2 for k, v in keys.items()
        }
        for problem in key_length_problems(algorithms, lengths):
            yield FieldError(join_path(path, "keys", problem.path), problem.message)


def key_length_problems(
    algorithms: ManualAlgorithms, lengths: dict[str, int | None]
) -> list[FieldError]:
    """Keys missing, extra or of the wrong length for `algorithms`.

    `lengths` maps `encryptionIn`/`encryptionOut`/`integrityIn`/`integrityOut`
    to the byte length given (None = absent). The paths of the result are those key
    names. Used for inline keys here and for a keys file in :mod:`.to_core`.
    """
    problems = []
    for prefix, need in (
        ("encryption", algorithms.encryption_key_len),
        ("integrity", algorithms.integrity_key_len),
    ):
        for direction in ("In", "Out"):
            name = prefix + direction
            got = lengths.get(name)
            if need == 0 and got is not None:
                problems.append(FieldError(name, f"not used: the algorithms take no {prefix} key"))
            elif need and got is None:
                problems.append(FieldError(name, f"required: a {need}-byte {prefix} key in hex"))
            elif need and got != need:
                problems.append(
                    FieldError(name, f"must be {need} bytes ({2 * need} hex digits), got {got}")
                )
    return problems


def _check_selectors(peer: Peer, local_address: str, path: str) -> Iterator[FieldError]:
    selectors = peer.traffic_selectors
    if selectors is None:
        return
    versions_local = {_version(s) for s in selectors.local}
    versions_remote = {_version(s) for s in selectors.remote}
    if not versions_local & versions_remote:
        yield FieldError(path, "local and remote selectors share no IP version")
    if peer.mode != "transport":
        return
    for side, entries, endpoint in (
        ("local", selectors.local, local_address),
        ("remote", selectors.remote, peer.address),
    ):
        host = ipaddress.ip_network(endpoint)
        for index, selector in enumerate(entries):
            network = ipaddress.ip_network(selector.cidr)
            if network.version != host.version or not network.subnet_of(host):  # type: ignore[arg-type]
                yield FieldError(
                    join_path(path, side, index),
                    f"transport mode protects only traffic of the endpoint itself: use "
                    f"{endpoint} (or tunnel mode for {selector.cidr})",
                )


def _version(selector: TrafficSelector) -> int:
    return ipaddress.ip_network(selector.cidr).version


__all__ = ["check", "key_length_problems"]
