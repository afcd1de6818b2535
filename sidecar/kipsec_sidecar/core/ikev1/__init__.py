"""IKEv1 (ISAKMP, RFC 2408 / 2407 / 2409, NAT-T RFC 3947): the sans-IO wire and key layer.

Sibling of :mod:`kipsec_sidecar.core.ike` (IKEv2): it shares the algorithm registry
(:mod:`kipsec_sidecar.core.algorithms`), the prf (:func:`kipsec_sidecar.core.ike.keys.prf`),
DH (:mod:`kipsec_sidecar.core.ike.dh`), certificates (:mod:`kipsec_sidecar.core.ike.certs`),
signatures (:mod:`kipsec_sidecar.core.ike.auth`), traffic selectors and the header /
payload-chain walking of :mod:`kipsec_sidecar.core.ike.message`. The exchanges (main
mode, quick mode, informational) and the engine build on the modules below; nothing here
reads a clock, a socket or randomness except RSA blinding in :mod:`.signature`.

API summary (stable; all functions pure, errors are the project's typed ones)

``constants``
    ExchangeType (MAIN 2, AGGRESSIVE 4 - to refuse, INFORMATIONAL 5, QUICK 32), Flag
    (ENCRYPTION/COMMIT/AUTH_ONLY), PayloadType (1-13, NAT_D 20, NAT_OA 21, drafts
    130/131), ProtocolId (ISAKMP 1, AH 2, ESP 3, IPCOMP 4), Phase1Attr, Phase1Encryption,
    HashAlgorithm, AuthMethod (1 PSK, 2 DSS, 3 RSA sig, 4 RSA enc, 5 revised, 9-11
    ECDSA), LifeType, Phase2Attr, EncapsulationMode (1-4 and drafts), AuthAlgorithm,
    AhTransform, IdType, NotifyType (errors 1-30, RESPONDER_LIFETIME, INITIAL_CONTACT,
    R_U_THERE/_ACK); DOI_IPSEC, SIT_IDENTITY_ONLY, KEY_IKE, COOKIE_LEN. ESP transform
    IDs are IKEv2's EncrId, groups IKEv2's DhGroup.

``payloads``
    Attribute(type, value: int = TV | bytes = TLV; .as_int), Transform(number,
    transform_id, attributes; .get), Proposal(number, protocol, spi, transforms),
    SaPayload(proposals, doi, situation), KePayload(data), IdPayload(id_type, data,
    protocol, port; .body() = IDii_b), HashPayload, SigPayload, NoncePayload (8-256),
    NotificationPayload(notify_type, protocol, spi, data, doi), DeletePayload(protocol,
    spis, doi), NatDPayload, NatOaPayload(id_type, address), SealedPayload(payload_type,
    data) for ciphertext bodies; IKEv2's CertPayload, CertReqPayload, VendorIdPayload,
    UnknownPayload. encode_body / decode_body / payload_type; Payload (the union).

``message``
    Message(cookie_i, cookie_r, exchange, message_id, payloads, flags, raw) with get,
    all, notification, raw_after(i) (HASH(1) input), raw_body(i) (SAi_b);
    encode_message / decode_message(data, sealed=...) for clear messages;
    decode_header (IKEv2's Header; InvalidMajorVersion), encode_payloads,
    decode_payloads(first, data, padded=, sealed=) -> (payloads, raw).

``encryption``
    phase1_iv(prf_id, ke_i, ke_r), phase2_iv(prf_id, last_phase1_iv, message_id),
    encrypt_message(msg, key, iv) -> (datagram, next_iv), decrypt_message(data, key,
    iv, sealed=) -> (Message, next_iv); cbc_encrypt / cbc_decrypt. Keep next_iv only
    once the message is accepted.

``keys`` (all take ``prf_id`` from policy.prf_for_hash and ``legacy_sha1=``)
    skeyid_signature(ni, nr, g_xy), skeyid_psk(psk, ni, nr), skeyid_public_key(ni,
    nr, cky_i, cky_r); derive_phase1_keys(skeyid, g_xy, cky_i, cky_r, key_len) ->
    Phase1Keys(skeyid, skeyid_d, skeyid_a, skeyid_e, encryption_key); expand (App. B);
    hash_i / hash_r(skeyid, ke_i, ke_r, cky_i, cky_r, sa_i_body, id_body);
    quick_mode_hash1(skeyid_a, mid, after_hash), quick_mode_hash2(..., ni,
    after_hash), quick_mode_hash3(..., ni, nr), informational_hash(skeyid_a, mid,
    after_hash); keymat(...) and quick_mode_child_keys(skeyid_d, protocol, spi_i,
    spi_r, ni, nr, encr_len, integ_len, g_xy=None) -> IKEv2 ChildKeys.

``policy``
    prf_for_hash(hash_alg, legacy_sha1=); phase1_suite(transform, legacy_sha1=) ->
    Phase1Suite(encr_id, key_bits, hash_alg, prf_id, auth_method, dh_group,
    life_seconds, life_kilobytes; .to_transform, .encryption_key_len);
    phase2_suite(protocol, transform) -> Phase2Suite(protocol, encr_id, key_bits,
    integ_id, mode, dh_group, lifetimes; .to_transform, .keymat_lens = (encr,
    integ) bytes per SA). Refusals raise the registry's RefusedAlgorithm.

``signature``
    sign_hash(private_key, method, hash_value), verify_hash(public_key, method,
    hash_value, sig) for methods 2, 3, 9, 10, 11 (AuthenticationFailed).

``pubkey`` (methods 4 and 5)
    seal_rsa(payload, public_key) / open_rsa(sealed, private_key);
    revised_key(prf_id, nonce, cookie, key_len) (one Ke), revised_keys(prf_id, ni,
    nr, cky_i, cky_r, key_len) -> (Ke_i, Ke_r);
    seal_symmetric(payload, key) / open_symmetric(sealed, key);
    certificate_hash(prf_id, der) (HASH(1)).

``identity``
    selector_id(TrafficSelector) -> IdPayload, id_selector(IdPayload) ->
    TrafficSelector (quick mode IDci/IDcr). Phase 1 ID types share IKEv2's numbers:
    ike.certs.identity_matches works on IdPayload (id_type, data).

``natt``
    nat_d_hash(prf_id, cky_i, cky_r, address, port), udp_mode, plain_mode,
    is_udp_encapsulated.
"""
