"""Text and URLs that came from someone else, made safe to print, store and connect to.

Server replies and error messages can carry terminal escape sequences; URLs can carry
credentials or tokens in their user part or query string. Everything a server sends is
escaped before it reaches a terminal or a tracked file, and every URL shown or recorded is
reduced to scheme, host, port and path.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit

import yaml

LOOPBACK_HOSTS = ("localhost",)
ESCAPED_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")  # control, format (bidi), surrogate, line breaks
SECRET_MASK = "<api key>"
MAX_YAML_NODES = 100_000  # nodes of a YAML file with its aliases expanded (a 570-byte alias bomb has 10^9)


def escape_controls(text: str, keep: str = "", limit: int | None = None) -> str:
    """`text` with every control or format character written as an escape (`\\x1b`, `\\u202e`);
    characters in `keep` (e.g. newlines of a stored reply) stay. Cut to `limit` characters."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more characters)"
    return "".join(ch if ch in keep or unicodedata.category(ch) not in ESCAPED_CATEGORIES
                   else ascii(ch)[1:-1] for ch in text)


def mask_secret(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` replaced by SECRET_MASK, in any letter case
    (headers are lowercased on the way) and with Unicode format characters (soft hyphens,
    zero-width joiners: category Cf) inside it ignored, so a server cannot hide the echoed key
    from the mask with invisible characters (those outside it stay, to be escaped). Mask before
    cutting text short, never after."""
    if not secret:
        return text
    kept = [i for i, ch in enumerate(text) if unicodedata.category(ch) != "Cf"]  # folded index -> text index
    folded = "".join(text[i] for i in kept)
    out, done = [], 0
    for found in re.finditer(re.escape(secret), folded, flags=re.IGNORECASE):
        start, end = kept[found.start()], kept[found.end() - 1] + 1
        out += [text[done:start], SECRET_MASK]
        done = end
    return "".join(out) + text[done:]


def load_yaml(text: str, source: str) -> Any:
    """YAML from someone else (a template file, a settings file), as `yaml.safe_load` reads it,
    but refused with a ValueError naming `source` when its aliases expand to more than
    MAX_YAML_NODES nodes (a few hundred bytes of nested aliases would otherwise take
    gigabytes once copied), when it nests too deep, or when it is not YAML."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_nodes(node, {}) > MAX_YAML_NODES:
            raise ValueError(f"{source}: its aliases expand to more than {MAX_YAML_NODES:,} values; valid: "
                             f"a plain YAML mapping (anchors and aliases used sparingly)")
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: not valid YAML: {escape_controls(' '.join(str(error).split()), limit=200)}") from None
    except RecursionError:
        raise ValueError(f"{source}: nests too deep to read; valid: a plain YAML mapping") from None
    finally:
        loader.dispose()


def _expanded_nodes(node: yaml.Node, sizes: dict[int, int]) -> int:
    """The nodes of `node` with every alias expanded, each shared node counted once per use
    (memoized, so counting is linear in the file; a node that contains itself counts as too many)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_YAML_NODES + 1  # until counted: a cycle through it is too many
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    total = 1
    for child in children:
        total += _expanded_nodes(child, sizes)
        if total > MAX_YAML_NODES:
            break
    sizes[id(node)] = total
    return total


def redact_url(url: str) -> str:
    """scheme://host[:port]/path: no user name, password, query string or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    host = f"[{host}]" if ":" in host else host
    return escape_controls(f"{parts.scheme}://{host}{port}{parts.path}")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url: str) -> str | None:
    """Why `url` cannot be an endpoint (None when it can): http(s) only, plain http only to
    this machine, no credentials, query string or fragment (keys live in runtime settings)."""
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises ValueError on a malformed port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "use an http(s)://host/... URL"
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return "no credentials, query string or fragment in an endpoint URL (the key comes from the runtime settings)"
    if parts.scheme == "http" and not is_loopback(host):
        return "plain http only to localhost; use https"
    return None


def endpoint_allowed(url: str, allowed: tuple[str, ...] | list[str]) -> bool:
    """Whether an allow-list entry approves `url`: same scheme and host, the same port when the
    entry names one, and the entry's path a prefix of the URL's (by whole segments)."""
    target = urlsplit(url)
    for entry in allowed:
        approved = urlsplit(entry)
        if (approved.scheme, (approved.hostname or "").lower()) != (target.scheme, (target.hostname or "").lower()):
            continue
        if approved.port is not None and approved.port != target.port:
            continue
        prefix = approved.path.rstrip("/")
        if target.path.rstrip("/") == prefix or target.path.startswith(prefix + "/"):
            return True
    return False
