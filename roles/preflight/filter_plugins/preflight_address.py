"""The address test of role preflight: is a value an IP address, a DNS name, or neither?

ansible.utils.ipaddr needs the Python library netaddr, which the ansible package does not
bring (and preflight must run offline on a bare control node), so the role classifies
addresses with Python's own ipaddress module and an RFC 1123 host-name pattern.
"""

from __future__ import annotations

import ipaddress
import re

# RFC 1123 labels: letters, digits and '-', not starting or ending with '-', 1..63 long.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def preflight_address_kind(value: object) -> str:
    """'ipv4', 'ipv6', 'dns' or 'invalid' for an address written in an inventory.

    A name is a DNS name when it is at most 253 characters of RFC 1123 labels separated by
    dots (a trailing dot allowed) and its last label is not all digits: '10.0.0.300' or
    '10.0.0' are mistyped IP addresses, not names. URLs, ports, spaces and empty values are
    invalid.
    """
    if not isinstance(value, str):
        return "invalid"
    text = value.strip()
    if text != value or not text:
        return "invalid"
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return f"ipv{parsed.version}"
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return "invalid"
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return "invalid"
    if labels[-1].isdigit():
        return "invalid"
    return "dns"


class FilterModule:
    """preflight_address_kind: see its docstring."""

    def filters(self) -> dict:
        return {"preflight_address_kind": preflight_address_kind}
