"""IKEv2 (RFC 7296): wire codec, key derivation, authentication and the per-SA engine."""
