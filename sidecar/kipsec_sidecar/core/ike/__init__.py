"""IKEv2 (RFC 7296): wire codec, key derivation, authentication and the per-SA engine."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# DSA stays for the classic DSS method (auth method 3) and DSA certificates, for
# interoperability; cryptography 51 and later deprecates it and warns on each use — the
# names of its ``dsa`` module, loading a DSA key, a DSA certificate's public key, a DSA
# signature check — which every sidecar command printed to its user. Only that warning,
# and only where kipsec's own modules (this package, the configuration that loads keys)
# trigger it, is ignored: other warnings, and DSA warnings of other code, still show.
warnings.filterwarnings(
    "ignore",
    message="DSA is deprecated",
    category=CryptographyDeprecationWarning,
    module=r"kipsec_sidecar\.",
)
