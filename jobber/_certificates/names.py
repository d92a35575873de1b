"""How OpenSSL compares X.509 names, for issuer lookup and nameConstraints.

Issuer lookup compares names in OpenSSL's canonical form, not byte for byte; it must match
what the TLS handshake decides, so the canonical form is redone here.
"""

from __future__ import annotations

import re

from cryptography import x509

NameKey = tuple[frozenset[tuple[str, object]], ...]  # a name as X509_NAME_cmp sees it
_SPACE = re.compile(r"[ \t\n\v\f\r]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def canonical_name(name: x509.Name) -> NameKey:
    # X509_NAME_cmp compares a canonical form: string values lose leading and trailing
    # space, runs of white space become one space, ASCII is lowercased, and the ASN.1
    # string type is ignored. cryptography's verify_directly_issued_by compares the raw
    # encodings instead, which is why signatures are checked by hand in _signature_ok.
    def value(v: object) -> object:
        return ascii_lower(_SPACE.sub(" ", v.strip(" \t\n\v\f\r"))) if isinstance(v, str) else v

    return tuple(frozenset((a.oid.dotted_string, value(a.value)) for a in rdn)
                 for rdn in name.rdns)
