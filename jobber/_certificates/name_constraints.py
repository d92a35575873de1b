"""nameConstraints, checked as OpenSSL checks them, for the chain checks in ``chain``.

A CA's nameConstraints limit the names of every certificate below it; the TLS handshake
enforces them, so they are redone here to refuse the same certificates, and say why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from jobber._certificates.names import ascii_lower, canonical_name
from jobber._errors import CertificateError

if TYPE_CHECKING:
    from jobber._certificates.facts import Facts


def check_name_constraints(chain: list[Facts], roles: list[str]) -> None:
    # check_name_constraints (x509_vfy.c), NAME_CONSTRAINTS_check (v3_ncons.c): each
    # certificate below a CA with nameConstraints, self-issued intermediates excepted,
    # must fit them; the subject counts as a directoryName, its emailAddress attributes
    # as rfc822Names, and the leaf's host-like commonNames as dNSNames when it has no
    # DNS subjectAltName.
    constrained = [(j, c.extension(ExtensionOID.NAME_CONSTRAINTS)) for j, c in enumerate(chain)]
    constrained = [(j, nc) for j, nc in constrained if nc is not None]
    for i, facts in enumerate(chain):
        if not any(j > i for j, _ in constrained) or (i > 0 and facts.self_issued):
            continue
        subject = facts.cert.subject
        names: list[tuple[type, object]] = [(x509.DirectoryName, subject)] if subject.rdns else []
        names += [(x509.RFC822Name, str(a.value))
                  for a in subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
        alt = facts.extension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        names += [(type(g), g.value) for g in alt] if alt is not None else []
        if i == 0 and all(kind is not x509.DNSName for kind, _ in names):
            cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            names += [(x509.DNSName, dns) for dns in map(_cn_as_dns, cns) if dns]
        for j, constraints in constrained:
            for kind, value in names if j > i else ():
                problem = _constraint_problem(kind, value, constraints)
                if problem:
                    shown = value.rfc4514_string() if isinstance(value, x509.Name) else value
                    raise CertificateError(
                        f"{roles[i]} has the name {shown}, which {problem} {roles[j]}: use a "
                        f"certificate whose names fit them, or one from another CA")


def _cn_as_dns(attribute: x509.NameAttribute[Any]) -> str | None:
    # cn2dnsid (v3_ncons.c): a commonName is a host name when it has two or more labels
    # of letters, digits, '_' and inner '-'.
    value = str(attribute.value).rstrip("\0")
    dotted = False
    for i, c in enumerate(value):
        if c.isascii() and (c.isalnum() or c == "_"):
            continue
        if 0 < i < len(value) - 1 and (c == "-" or (
                c == "." and value[i + 1] not in ".-" and value[i - 1] != "-")):
            dotted = dotted or c == "."
            continue
        return None
    return value if dotted else None


def _constraint_problem(kind: type, value: object, constraints: x509.NameConstraints) -> str:
    # nc_match (v3_ncons.c): when subtrees of the name's type are permitted, one must
    # match (the first match ends the search), and no excluded subtree may match.
    matched = None
    for base in constraints.permitted_subtrees or ():
        if type(base) is kind and not matched:
            matched = _within(kind, value, base.value)
            if matched is None:
                return "TLS cannot check against the nameConstraints of"
    if matched is False:
        return "is outside the nameConstraints of"
    for base in constraints.excluded_subtrees or ():
        if type(base) is kind:
            inside = _within(kind, value, base.value)
            if inside is None:
                return "TLS cannot check against the nameConstraints of"
            if inside:
                return "is excluded by the nameConstraints of"
    return ""


def _within(kind: type, value: Any, limit: Any) -> bool | None:
    """Whether a name lies in a subtree; None where OpenSSL cannot tell (a failure)."""
    if kind is x509.DirectoryName:
        prefix = canonical_name(limit)
        return canonical_name(value)[:len(prefix)] == prefix
    if kind is x509.DNSName:  # nc_dns: whole labels may be added on the left
        if len(value) < len(limit) or (len(value) > len(limit) and not limit.startswith(".")
                                       and value[-len(limit) - 1] != "."):
            return False
        return not limit or ascii_lower(value[-len(limit):]) == ascii_lower(limit)
    if kind is x509.RFC822Name:  # nc_email: ".host" is a domain; the local part is exact
        if "@" not in value:
            return None
        if "@" not in limit and limit.startswith("."):
            return len(value) > len(limit) and \
                ascii_lower(value[-len(limit):]) == ascii_lower(limit)
        local, _, host = value.rpartition("@")
        base_local, _, base_host = limit.rpartition("@")
        return (not base_local or base_local == local) and \
            ascii_lower(host) == ascii_lower(base_host)
    if kind is x509.UniformResourceIdentifier:  # nc_uri: compares the host only
        colon = value.find(":")
        if colon < 0 or value[colon + 1:colon + 3] != "//":
            return None
        rest = value[colon + 3:]
        end = rest.find(":") if ":" in rest else rest.find("/")
        host = rest if end < 0 else rest[:end]
        if not host:
            return None
        if limit.startswith("."):
            return len(host) > len(limit) and \
                ascii_lower(host[-len(limit):]) == ascii_lower(limit)
        return ascii_lower(host) == ascii_lower(limit)
    if kind is x509.IPAddress and hasattr(limit, "netmask"):
        return value.version == limit.version and value in limit
    return None
