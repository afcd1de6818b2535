"""The custom resources `Tunnel`, `TunnelCertificate` and `ExternalPeer` (kipsec.io, v1alpha1).

These pydantic models are the ONE source of both resources: the CRD manifests in
`charts/kipsec/crds/` are generated from them (:mod:`.openapi`, :mod:`.render`), the
operator validates specs with them (:mod:`kipsec_operator.reconcile.validation`) and
`docs/operator.md` describes them. Each field's docstring becomes its `description`,
which is what `kubectl explain tunnel.spec.<field>` shows, so write docstrings for the
person writing YAML.

Rules the API server can check itself are declared next to the model they constrain as
CEL `x-kubernetes-validations` (:func:`rule`); their messages name the field. Rules
that need other objects (a Secret exists, a proposal string names usable algorithms)
live in the operator's validation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kipsec.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: Go-style durations (what `kubectl` prints and CEL's `duration()` parses).
GO_DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

DEFAULT_IKE_PROPOSALS = ["aes256gcm16-prfsha256-x25519"]
DEFAULT_ESP_PROPOSALS = ["aes256gcm16"]
DEFAULT_AH_PROPOSALS = ["sha256"]

_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_SECRET_KEY = r"^[-._a-zA-Z0-9]{1,253}$"  # noqa: S105 - a pattern, not a secret


def rule(expression: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; `field_path` is relative (`.port`)."""
    entry = {"rule": expression, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def _rules(*entries: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(entries)}


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        hide_input_in_errors=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
    )


Duration = Annotated[str, Field(pattern=GO_DURATION_PATTERN, max_length=32)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME)]
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=_SECRET_KEY)]
LabelText = Annotated[str, Field(max_length=317)]


# --- selectors ------------------------------------------------------------------------


class LabelSelectorRequirement(_Model):
    """One expression of a label selector, as in any Kubernetes selector."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "self.operator in ['In', 'NotIn'] ? size(self.values) > 0 : size(self.values) == 0",
                "values: must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",
                ".values",
            )
        )
    )

    key: LabelText
    """The label key the expression applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the label's value relates to `values`."""
    values: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=64)] = []
    """Label values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(_Model):
    """Kubernetes label selector: every `matchLabels` pair and every expression must hold.

    An empty selector matches everything in scope.
    """

    match_labels: dict[LabelText, Annotated[str, Field(max_length=63)]] = {}
    """Labels that must be present with exactly these values."""
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=32)] = []
    """Set-based requirements (In, NotIn, Exists, DoesNotExist)."""


class Side(_Model):
    """One side of a Tunnel: pods by label, in namespaces by label."""

    pod_selector: LabelSelector = LabelSelector()
    """Which pods (labels of the pod). Empty: every pod in the selected namespaces."""
    namespace_selector: LabelSelector | None = None
    """Which namespaces (labels of the namespace). Unset: only the Tunnel's own
    namespace; an empty selector `{}`: every namespace. In a Tunnel, pods of another
    namespace take part only when that Namespace's annotation
    `kipsec.io/allow-tunnels-from` lists the Tunnel's namespace (comma-separated) or
    is `*`."""


class ToSide(Side):
    """The other side of a Tunnel: pods by label, or peers outside the cluster by name."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "size(self.externalPeers) == 0 || (!has(self.namespaceSelector) && "
                "size(self.podSelector.matchLabels) == 0 && "
                "size(self.podSelector.matchExpressions) == 0)",
                "spec.selector.to.externalPeers: cannot be combined with podSelector or "
                "namespaceSelector; link the pods in a second Tunnel",
                ".externalPeers",
            )
        )
    )

    external_peers: Annotated[list[ObjectName], Field(max_length=16)] = []
    """ExternalPeers (in the Tunnel's namespace) by name: every `from` pod gets an SA
    with each. With it, the side holds no pods (podSelector and namespaceSelector stay
    unset)."""

    @property
    def selects_pods(self) -> bool:
        """Whether this side is pods (False: external peers)."""
        return not self.external_peers


class TunnelSelector(_Model):
    """The pods the Tunnel protects: traffic between `from` and `to` is encrypted."""

    from_: Side = Field(alias="from")
    """The pods on one side."""
    to: ToSide | None = None
    """The pods (or external peers) on the other side. Omitted: a mesh, every pod of
    `from` with every other."""


# --- authentication -----------------------------------------------------------------------


class SecretKeyRef(_Model):
    """A key of a Secret in the Tunnel's namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: SecretKey
    """Key inside the Secret's data."""


class LocalObjectRef(_Model):
    """An object in the same namespace, by name."""

    name: ObjectName
    """Name of the object."""


class CaSecretRef(_Model):
    """A Secret holding PEM CA certificates that peers' certificates must chain to."""

    name: ObjectName
    """Name of the Secret, in the same namespace."""
    key: SecretKey = "ca.crt"
    """Key of the PEM bundle inside the Secret."""


class PskAuthentication(_Model):
    """A pre-shared key shared by every pod of the Tunnel."""

    secret_ref: SecretKeyRef
    """The Secret key holding the PSK (at least 8 bytes; use 32 random bytes)."""


class CertificateAuthentication(_Model):
    """X.509 certificates: per-pod identities from a TunnelCertificate, or a TLS Secret."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "has(self.tunnelCertificateRef) != has(self.secretRef)",
                "spec.authentication.certificate: give exactly one of tunnelCertificateRef, "
                "secretRef",
            ),
            rule(
                "!has(self.caSecretRef) || has(self.secretRef)",
                "spec.authentication.certificate.caSecretRef: only with secretRef (a "
                "TunnelCertificate brings its issuer's CA)",
                ".caSecretRef",
            ),
            rule(
                "!has(self.publicKeyEncryption) || has(self.tunnelCertificateRef)",
                "spec.authentication.certificate.publicKeyEncryption: only with "
                "tunnelCertificateRef (the operator delivers each pod its peers' certificates)",
                ".publicKeyEncryption",
            ),
        )
    )

    tunnel_certificate_ref: LocalObjectRef | None = None
    """A TunnelCertificate that issues each pod its own identity (recommended)."""
    secret_ref: LocalObjectRef | None = None
    """A Secret of type kubernetes.io/tls (as cert-manager writes: tls.crt, tls.key,
    ca.crt) shared by every pod of the Tunnel."""
    ca_secret_ref: CaSecretRef | None = None
    """The CAs to trust, with `secretRef`; default: `ca.crt` of that Secret. A value
    holding no PEM certificate is refused (as an ExternalPeer's)."""
    public_key_encryption: Literal["rsa", "revised"] | None = None
    """IKEv1 only (`ikeVersion: 1`), with `tunnelCertificateRef` issuing RSA keys:
    authenticate by public-key encryption instead of signatures, `rsa` (RFC 2409 5.2,
    method 4) or `revised` (5.3, method 5). Each side encrypts its nonce and identity to
    the other's RSA key, so it must know the peer's certificate before the exchange: the
    operator puts every peer pod's current certificate into each pod's configuration
    Secret (certificates only; private keys never leave their pod). A peer whose
    certificate the operator has not seen yet is left out of the pod's document until it
    has one. Unset: signatures."""


_ONE_AUTHENTICATION = ConfigDict(
    json_schema_extra=_rules(
        rule(
            "has(self.psk) != has(self.certificate)",
            "spec.authentication: give exactly one of psk, certificate",
        )
    )
)


class Authentication(_Model):
    """How the pods authenticate each other in IKE: exactly one of psk, certificate."""

    model_config = _ONE_AUTHENTICATION

    psk: PskAuthentication | None = None
    """Pre-shared key from a Secret."""
    certificate: CertificateAuthentication | None = None
    """X.509 certificates."""


# --- algorithms, lifetimes, liveness, traffic ------------------------------------------------

ProposalText = Annotated[str, Field(min_length=1, max_length=256)]


class Proposals(_Model):
    """Algorithms offered and accepted, most preferred first, in strongSwan syntax."""

    ike: Annotated[list[ProposalText], Field(min_length=1, max_length=16)] = list(
        DEFAULT_IKE_PROPOSALS
    )
    """IKE SA proposals: cipher[-integrity][-prf]-dhgroup. SHA-1 (sha1, prfsha1) only
    with ikeVersion 1, named here for a legacy peer (the status warns)."""
    esp: Annotated[list[ProposalText], Field(min_length=1, max_length=16)] = list(
        DEFAULT_ESP_PROPOSALS
    )
    """ESP proposals: an AEAD cipher, or a cipher with integrity; a DH group adds PFS."""
    ah: Annotated[list[ProposalText], Field(min_length=1, max_length=16)] = list(
        DEFAULT_AH_PROPOSALS
    )
    """AH proposals: an integrity algorithm; a DH group adds PFS."""


class Lifetimes(_Model):
    """How long SAs live; each is rekeyed `rekeyMargin` before it expires."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "duration(self.rekeyMargin) < duration(self.childSa) && "
                "duration(self.rekeyMargin) < duration(self.ikeSa)",
                "spec.lifetimes.rekeyMargin: must be shorter than childSa and ikeSa",
                ".rekeyMargin",
            )
        )
    )

    ike_sa: Duration = "4h"
    """Hard lifetime of the IKE SA (Go duration, e.g. 4h)."""
    child_sa: Duration = "1h"
    """Hard lifetime of each child (ESP/AH) SA."""
    rekey_margin: Duration = "9m"
    """Rekeying starts this long before a lifetime ends (make-before-break)."""


class Liveness(_Model):
    """Dead peer detection."""

    interval: Duration = "30s"
    """Idle time after which a peer is probed (0s disables probes)."""
    timeout: Duration = "2m"
    """How long a probe may go unanswered before the peer is declared dead."""


StartAction = Literal["none", "onDemand", "onStart", "auto"]
"""What starts an SA: none (only answer the peer), onDemand (the first packet for the
peer), onStart (at once), auto (onStart for up to 16 peers of a pod, onDemand above)."""

SaAction = Literal["none", "onDemand", "restart"]
"""What happens when the peer deletes the SA or is found dead: none (nothing),
onDemand (re-established on the next packet), restart (re-established at once)."""


class TrafficRule(_Model):
    """Traffic to protect, by IP protocol and (for TCP, UDP, SCTP) destination port."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "!has(self.port) || self.protocol in ['TCP', 'UDP', 'SCTP']",
                "port: only with protocol TCP, UDP or SCTP",
                ".port",
            ),
            rule(
                "!has(self.endPort) || (has(self.port) && self.endPort >= self.port)",
                "endPort: needs port, and must not be below it",
                ".endPort",
            ),
        )
    )

    protocol: Literal["TCP", "UDP", "SCTP", "ICMP", "Any"] = "TCP"
    """IP protocol. ICMP means ICMP for IPv4 and ICMPv6 for IPv6."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Destination port on the `to` side (TCP, UDP, SCTP). Unset: every port."""
    end_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Last port of an inclusive range starting at `port`."""


class ManualKeying(_Model):
    """Manual keying: SA keys and SPIs derived from a master key in a Secret, no IKE."""

    secret_ref: LocalObjectRef
    """Secret with `key` (hex, at least 32 bytes) and optionally `previousKey`, the
    key being rotated out. Each pod pair gets its own keys and SPIs from it."""
    encryption: Annotated[str, Field(max_length=64)] | None = None
    """One cipher (ESP only), e.g. aes256gcm16. Default for ESP: aes256gcm16."""
    integrity: Annotated[str, Field(max_length=64)] | None = None
    """One integrity algorithm: for AH (default sha256), or with a non-AEAD cipher."""
    replay_window: Annotated[int, Field(ge=0, le=65536)] = 1024
    """Anti-replay window in packets (0 disables replay protection)."""


# --- Tunnel ----------------------------------------------------------------------------------


class TunnelSpec(_Model):
    """An encrypted link between pods: which pods, and how the traffic is protected."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "self.keying != 'ike' || has(self.authentication) || "
                "(has(self.selector.to) && size(self.selector.to.externalPeers) > 0)",
                "spec.authentication: required with keying: ike (but for externalPeers)",
                ".authentication",
            ),
            rule(
                "self.keying != 'manual' || has(self.manual)",
                "spec.manual: required with keying: manual",
                ".manual",
            ),
            rule(
                "!has(self.manual) || self.keying == 'manual'",
                "spec.manual: only with keying: manual",
                ".manual",
            ),
            rule(
                "self.protocol != 'ah' || !has(self.encapsulation) || self.encapsulation == 'raw'",
                "spec.encapsulation: AH cannot be UDP-encapsulated (it authenticates the "
                "addresses a NAT rewrites); use raw or protocol esp",
                ".encapsulation",
            ),
        )
    )

    selector: TunnelSelector
    """The pods on each side."""
    mode: Literal["transport", "tunnel"] = "transport"
    """transport keeps the pods' IP header (pod-to-pod, least overhead); tunnel adds an
    outer header."""
    protocol: Literal["esp", "ah"] = "esp"
    """esp encrypts and authenticates; ah only authenticates (and cannot cross NAT)."""
    keying: Literal["ike", "manual"] = "ike"
    """ike negotiates and rekeys SAs (IKEv2, or IKEv1 with ikeVersion 1); manual takes
    keys from a Secret."""
    ike_version: Literal[1, 2] = 2
    """IKE version: 2, or 1 (IKEv1 main mode and quick mode, deprecated by RFC 9395: only
    for a legacy peer that speaks nothing else; the status warns). With 1, `proposals.ike`
    left at the IKEv2 default offers the sidecar's IKEv1 default
    (aes256-sha256-modp2048, aes256-sha256-ecp256); AEAD ciphers and Ed25519 keys are
    refused (IKEv1 has neither); SHA-1 only where proposals.ike names it."""
    authentication: Authentication | None = None
    """IKE authentication; required with keying ike."""
    manual: ManualKeying | None = None
    """Master key for keying manual."""
    proposals: Proposals = Proposals()
    """IKE, ESP and AH algorithms. Default AES-GCM-256, PRF SHA2-256, X25519."""
    lifetimes: Lifetimes = Lifetimes()
    """SA lifetimes and rekey margin."""
    liveness: Liveness = Liveness()
    """Dead peer detection."""
    traffic: Annotated[list[TrafficRule], Field(max_length=64)] = []
    """The traffic protected between the sides. Empty: all traffic."""
    encapsulation: Literal["udp", "raw"] | None = None
    """udp (UDP 4500, crosses NATs) or raw (IP protocol 50/51, needs NET_RAW). Default:
    udp for esp, raw for ah."""
    start: StartAction = "auto"
    """What starts an SA: none (only answer), onDemand (first packet), onStart (at
    once), auto (onStart up to 16 peers of a pod, onDemand above)."""
    close_action: SaAction | None = None
    """When the peer deletes the SA: none, onDemand (re-establish on traffic) or
    restart (re-establish at once). Unset: what `start` implies, as in the sidecar
    (onStart → restart, onDemand → onDemand, none → none)."""
    dpd_action: SaAction | None = None
    """When liveness finds the peer dead: none, onDemand or restart. Unset: what
    `start` implies, as for closeAction."""


class Condition(_Model):
    """A status condition, as in every Kubernetes resource."""

    type: Annotated[str, Field(max_length=316)]
    """Ready or Degraded."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: Annotated[str, Field(max_length=1024)]
    """CamelCase reason, one word, for machines."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """What happened, for humans; names the field at fault."""
    last_transition_time: str | None = None
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The generation of the spec the condition was computed for."""


class TunnelStatus(_Model):
    """What the operator and the sidecars observe (written by the operator only)."""

    observed_generation: int | None = None
    """The generation of the spec this status is about."""
    conditions: Annotated[list[Condition], Field(max_length=16)] = []
    """Ready: every expected child SA is established. Degraded: something is wrong."""
    pods: int = 0
    """Pods matched by the selector and configured (with an IP)."""
    peers_expected: int = 0
    """Pod-to-peer links the configuration asks for (counted at each end; a link to an
    ExternalPeer once, at the pod)."""
    child_sas_established: int = 0
    """Links whose sidecar reports an established child SA."""
    last_error: Annotated[str, Field(max_length=1024)] | None = None
    """The latest error a sidecar reported, with its pod (never secret material)."""
    warnings: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=8)] = []
    """Deprecated choices the spec opts in to (IKEv1; SHA-1 named in proposals.ike),
    each naming its field."""


# --- ExternalPeer --------------------------------------------------------------------------

_ADDRESS = r"^[0-9A-Za-z.:-]{1,253}$"
"""An IPv4/IPv6 address or a DNS name (checked further by the operator)."""


class CaConfigMapRef(_Model):
    """A ConfigMap holding PEM CA certificates (where public CAs are usually kept)."""

    name: ObjectName
    """Name of the ConfigMap, in the same namespace."""
    key: SecretKey = "ca.crt"
    """Key of the PEM bundle inside the ConfigMap's data (or binaryData)."""


class ExternalPeerCertificate(_Model):
    """X.509 towards the external peer: whom it must chain to, what the pods present."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "has(self.caSecretRef) != has(self.caConfigMapRef)",
                "spec.authentication.certificate: give exactly one of caSecretRef, caConfigMapRef",
            )
        )
    )

    ca_secret_ref: CaSecretRef | None = None
    """A Secret with the PEM CAs that signed the gateway's certificate (usually not
    kipsec's CA). Exactly one of caSecretRef, caConfigMapRef."""
    ca_config_map_ref: CaConfigMapRef | None = None
    """A ConfigMap with those PEM CAs (a CA certificate is public; a ConfigMap is where
    clusters usually keep one)."""
    tunnel_certificate_ref: LocalObjectRef
    """The TunnelCertificate whose per-pod certificate the pods present (the gateway
    must trust its issuer). A pod of a Tunnel naming this peer that it does not select
    gets no entry for the peer (the Tunnel is Degraded, NoCertificate)."""


class ExternalIdentity(_Model):
    """The IKE identity the external peer must prove: exactly one field."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "[has(self.fqdn), has(self.address), has(self.email), has(self.dn), "
                "has(self.keyId)].filter(x, x).size() == 1",
                "spec.identity: give exactly one of fqdn, address, email, dn, keyId",
            )
        )
    )

    fqdn: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """A DNS name (ID_FQDN), e.g. vpn.example.com."""
    address: Annotated[str, Field(min_length=2, max_length=45)] | None = None
    """An IP address (ID_IPV4_ADDR / ID_IPV6_ADDR)."""
    email: Annotated[str, Field(min_length=3, max_length=253)] | None = None
    """An RFC 822 address (ID_RFC822_ADDR)."""
    dn: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    """A distinguished name (ID_DER_ASN1_DN), e.g. "CN=vpn.example.com, O=Example"."""
    key_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    """An opaque key id (ID_KEY_ID)."""


class ExternalAuthentication(_Model):
    """How the pods and the external peer authenticate: exactly one of psk, certificate."""

    model_config = _ONE_AUTHENTICATION

    psk: PskAuthentication | None = None
    """A pre-shared key from a Secret (every pod uses the same one)."""
    certificate: ExternalPeerCertificate | None = None
    """X.509 certificates."""


Cidr = Annotated[str, Field(min_length=3, max_length=49)]


class ExternalPeerSpec(_Model):
    """An IPsec peer outside the cluster: a security gateway and the subnets behind it,
    or a single host. Tunnels name it in `spec.selector.to.externalPeers`."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "self.initiator != 'external' || self.start == 'auto' || self.start == 'none'",
                "spec.start: the pods never initiate with initiator: external; leave start "
                "unset or none",
                ".start",
            ),
        )
    )

    address: Annotated[str, Field(min_length=1, max_length=253, pattern=_ADDRESS)]
    """The peer's IP address or DNS name, where IKE and ESP go (a name is resolved by
    the operator and re-resolved periodically)."""
    identity: ExternalIdentity | None = None
    """The identity the peer must prove. Unset: with PSK its address; with certificates
    any certificate from `authentication.certificate.caSecretRef`."""
    subnets: Annotated[list[Cidr], Field(max_length=64)] = []
    """The networks behind the gateway (CIDRs). Empty: the peer is a single host (its
    address only)."""
    authentication: ExternalAuthentication
    """How both ends authenticate."""
    proposals: Proposals = Proposals()
    """IKE and ESP algorithms, as in a Tunnel."""
    lifetimes: Lifetimes = Lifetimes()
    """SA lifetimes and rekey margin, as in a Tunnel."""
    liveness: Liveness = Liveness()
    """Dead peer detection, as in a Tunnel."""
    ike_version: Literal[1, 2] = 2
    """IKE version: 2, or 1 (IKEv1 main mode and quick mode, deprecated by RFC 9395: only
    for a legacy peer that speaks nothing else; the status warns). With 1, `proposals.ike`
    left at the IKEv2 default offers the sidecar's IKEv1 default
    (aes256-sha256-modp2048, aes256-sha256-ecp256); AEAD ciphers and Ed25519 keys are
    refused (IKEv1 has neither); SHA-1 only where proposals.ike names it."""
    initiator: Literal["pods", "external", "either"] = "either"
    """Who starts the SAs: the pods, the external side (the pods only answer), either."""
    start: StartAction = "auto"
    """When the pods initiate (with initiator pods or either), as a Tunnel's start."""
    close_action: SaAction | None = None
    """When the peer deletes the SA: none, onDemand or restart. Unset: what `start`
    implies (onStart → restart, onDemand → onDemand, none → none)."""
    dpd_action: SaAction | None = None
    """When liveness finds the peer dead: none, onDemand or restart. Unset: as
    closeAction."""


class PodError(_Model):
    """The last failure one pod reports towards the external peer."""

    pod: Annotated[str, Field(max_length=317)]
    """namespace/name of the pod."""
    reason: Annotated[str, Field(max_length=64)]
    """Why the pod's handshake with the peer last failed, one of the sidecar's fixed
    reasons: no_proposal_chosen, authentication_failed, ts_unacceptable, invalid_ke,
    peer_dead (no answer) or other."""


class ExternalPeerStatus(_Model):
    """What the operator and the sidecars observe (written by the operator only)."""

    observed_generation: int | None = None
    """The generation of the spec this status is about."""
    conditions: Annotated[list[Condition], Field(max_length=16)] = []
    """Ready: every pod of the Tunnels naming it has an established child SA with it.
    Degraded: something is wrong (the message names the field)."""
    addresses: Annotated[list[Annotated[str, Field(max_length=45)]], Field(max_length=16)] = []
    """The addresses spec.address resolved to (the first one is used)."""
    tunnels: int = 0
    """Valid Tunnels that name it."""
    pods: int = 0
    """Pods configured with an SA towards it."""
    pods_established: int = 0
    """Pods whose sidecar reports an established child SA with it."""
    pod_errors: Annotated[list[PodError], Field(max_length=32)] = []
    """The latest failure per pod that is not established (at most 32 pods)."""
    warnings: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=8)] = []
    """Deprecated choices the spec opts in to (IKEv1; SHA-1 named in proposals.ike),
    each naming its field."""


# --- TunnelCertificate -------------------------------------------------------------------------


class Issuer(_Model):
    """Who signs the pods' certificates."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "self.type == 'CASecret' ? has(self.caSecretRef) : !has(self.caSecretRef)",
                "spec.issuer.caSecretRef: required with type CASecret, and only then",
                ".caSecretRef",
            )
        )
    )

    type: Literal["Operator", "CASecret"] = "Operator"
    """Operator: the operator's own CA. CASecret: a CA certificate and key from a Secret."""
    ca_secret_ref: LocalObjectRef | None = None
    """With CASecret: a kubernetes.io/tls Secret (tls.crt, tls.key) of the CA."""


class PrivateKey(_Model):
    """The key pair the sidecar generates in the pod (it never leaves the pod)."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                "self.algorithm == 'RSA' ? (!has(self.size) || "
                "(self.size >= 2048 && self.size <= 4096)) : self.algorithm == 'ECDSA' ? "
                "(!has(self.size) || self.size == 256 || self.size == 384) : !has(self.size)",
                "spec.privateKey.size: RSA 2048-4096, ECDSA 256 or 384, none for Ed25519",
                ".size",
            )
        )
    )

    algorithm: Literal["ECDSA", "RSA", "Ed25519"] = "ECDSA"
    """Key algorithm."""
    size: Annotated[int, Field(ge=256, le=4096)] | None = None
    """Key size in bits: ECDSA 256 (default) or 384, RSA 2048 (default) to 4096."""


class CertificateIdentity(_Model):
    """What the certificate names: a SPIFFE-style URI SAN and the pod's IP addresses."""

    trust_domain: Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME)] = (
        "cluster.local"
    )
    """The trust domain of the URI SAN spiffe://<trustDomain>/ns/<namespace>/sa/<sa>."""
    include_pod_ips: bool = True
    """Also put the pod IPs in iPAddress SANs (kipsec peers identify each other by IP:
    a Tunnel or ExternalPeer presenting certificates without them is refused)."""


#: Bounds of a TunnelCertificate's lifetimes (Go durations), enforced by the CRD's CEL
#: rules and again by the operator (:mod:`kipsec_operator.certificates.terms`), for an API
#: server still running an older CRD. Why these values:
#:
#: * duration at least 1h (cert-manager's minimum too): every renewal is a TokenReview
#:   and a signature per pod, and below an hour the 5-minute clock-skew allowance of
#:   notBefore is a large part of the lifetime;
#: * duration at most 720h (30 days): the operator's CA rotation keeps a retired CA in
#:   the trust bundles for the longest leaf lifetime, 30 days
#:   (``CaRotationPolicy.max_leaf_duration``); a longer leaf would outlive that trust;
#: * renewBefore at least 5m: time for a failed renewal to be retried before the
#:   certificate expires;
#: * duration - renewBefore at least 10m: a certificate is used that long before it is
#:   renewed, which bounds the CSR rate to one per pod per 10 minutes.
MIN_CERTIFICATE_DURATION = "1h"
MAX_CERTIFICATE_DURATION = "720h"
MIN_RENEW_BEFORE = "5m"
MIN_RENEWAL_INTERVAL = "10m"


class TunnelCertificateSpec(_Model):
    """Pod identities: which pods get a certificate, from which CA, of which kind."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            rule(
                f"duration(self.duration) >= duration('{MIN_CERTIFICATE_DURATION}') && "
                f"duration(self.duration) <= duration('{MAX_CERTIFICATE_DURATION}')",
                f"spec.duration: must be between {MIN_CERTIFICATE_DURATION} and "
                f"{MAX_CERTIFICATE_DURATION} (30 days)",
                ".duration",
            ),
            rule(
                f"duration(self.renewBefore) >= duration('{MIN_RENEW_BEFORE}')",
                f"spec.renewBefore: must be at least {MIN_RENEW_BEFORE}",
                ".renewBefore",
            ),
            rule(
                "duration(self.duration) - duration(self.renewBefore) >= "
                f"duration('{MIN_RENEWAL_INTERVAL}')",
                f"spec.renewBefore: must be at least {MIN_RENEWAL_INTERVAL} shorter than "
                "spec.duration",
                ".renewBefore",
            ),
        )
    )

    selector: Side
    """The pods that get an identity."""
    issuer: Issuer = Issuer()
    """Who signs the certificates."""
    private_key: PrivateKey = PrivateKey()
    """The pod's key pair, generated in the pod."""
    duration: Duration = "24h"
    """Validity of each certificate, 1h to 720h (30 days)."""
    renew_before: Duration = "8h"
    """How long before expiry the certificate is renewed: at least 5m, and at least 10m
    shorter than `duration`."""
    identity: CertificateIdentity = CertificateIdentity()
    """The names in the certificate."""


class RetiredCa(_Model):
    """A CA the issuer Secret no longer holds, still in the pods' trust bundles."""

    certificate: str
    """The CA certificate (PEM)."""
    until: str
    """When it leaves the trust bundles (RFC 3339)."""


class TunnelCertificateStatus(_Model):
    """Issuance state (written by the operator only)."""

    observed_generation: int | None = None
    """The generation of the spec this status is about."""
    conditions: Annotated[list[Condition], Field(max_length=16)] = []
    """Ready: every selected pod holds a valid certificate."""
    not_after: str | None = None
    """Earliest expiry among the issued certificates (RFC 3339)."""
    renewal_time: str | None = None
    """When the next renewal is due (RFC 3339)."""
    pods_issued: int = 0
    """Pods holding a current certificate."""
    issuer_ca: str | None = None
    """CASecret issuer: the CA (PEM) last published from the Secret."""
    retired_issuer_cas: Annotated[list[RetiredCa], Field(max_length=4)] = []
    """CASecret issuer: CAs replaced in the Secret that pods still trust until `until`
    (the replacement time plus spec.duration), so certificates they signed keep working."""


__all__ = [
    "API_VERSION",
    "DEFAULT_AH_PROPOSALS",
    "DEFAULT_ESP_PROPOSALS",
    "DEFAULT_IKE_PROPOSALS",
    "GROUP",
    "MAX_CERTIFICATE_DURATION",
    "MIN_CERTIFICATE_DURATION",
    "MIN_RENEWAL_INTERVAL",
    "MIN_RENEW_BEFORE",
    "VERSION",
    "Authentication",
    "CaSecretRef",
    "CertificateAuthentication",
    "CertificateIdentity",
    "Condition",
    "ExternalAuthentication",
    "ExternalIdentity",
    "ExternalPeerCertificate",
    "ExternalPeerSpec",
    "ExternalPeerStatus",
    "Issuer",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Lifetimes",
    "Liveness",
    "LocalObjectRef",
    "ManualKeying",
    "PodError",
    "PrivateKey",
    "Proposals",
    "PskAuthentication",
    "SaAction",
    "SecretKeyRef",
    "Side",
    "StartAction",
    "ToSide",
    "TrafficRule",
    "TunnelCertificateSpec",
    "TunnelCertificateStatus",
    "TunnelSelector",
    "TunnelSpec",
    "TunnelStatus",
    "rule",
]
