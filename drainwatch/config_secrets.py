"""Refuse key material and literal secrets in a config file, naming where and never what.

DESIGN.md §6: drainwatch is watch-only and takes secrets only from the environment. The raw text
is scanned before YAML parsing (comments, or a file that does not even parse, are covered),
then every key and value is scanned with its field path.

A 64-hex string is refused everywhere (values, keys, comments) except as an x-only key in a key
position of a ``tr(...)`` value of ``wallets.<name>.descriptors`` (BIP386): a 32-byte hex value
cannot be told apart from a raw private key, and no other field takes one.
"""

from __future__ import annotations

from collections.abc import Iterator

from drainwatch import keymaterial
from drainwatch.config_yaml import FieldPath, YamlDocument, format_path, parse_yaml
from drainwatch.errors import ConfigError

_WATCH_ONLY = (
    "drainwatch is watch-only and must never hold private keys or seed phrases: remove it from "
    "the file (the value is not shown) / 秘密鍵・シードフレーズは設定ファイルに書けません"
)
_HEX_VALUE = (
    "it may be a private key: drainwatch refuses any 32-byte hex value outside taproot "
    "descriptors (x-only keys in tr(...) under wallets.<name>.descriptors), including "
    "transaction or block hashes pasted into comments; remove it (the value is not shown) / "
    "64 桁の 16 進数は秘密鍵の可能性があるため、taproot ディスクリプタ以外（コメント中の"
    "トランザクション・ブロックハッシュも含む）には書けません"
)
_USE_ENV = (
    "secrets come from the environment, never from the config file: put it in an environment "
    "variable and give that variable's NAME in {field} / 秘密情報は環境変数で渡してください"
)
#: Field names that can only mean a literal secret, and the *_env field to use instead.
LITERAL_SECRET_FIELDS = {
    "token": "token_env",
    "bot_token": "token_env",
    "password": "password_env (store) or auth_env (rpc)",
    "passwd": "password_env (store) or auth_env (rpc)",
    "secret": "secret_env",
    "api_key": "auth_env",
    "apikey": "auth_env",
    "auth": "auth_env",
    "credentials": "auth_env",
}
KEY_MATERIAL_FIELDS = frozenset(
    {"private_key", "privkey", "priv_key", "xprv", "tprv", "wif", "mnemonic", "seed", "seed_phrase"}
)


def _reason(kind: str) -> str:
    if kind == keymaterial.SLACK_TOKEN:
        return f"{kind} found; " + _USE_ENV.format(field="token_env")
    if kind == keymaterial.HEX_KEY:
        return f"a 64-hex-digit (32-byte) value found; {_HEX_VALUE}"
    return f"{kind} found; {_WATCH_ONLY}"


def refuse_raw_text(text: str, source: str) -> None:
    """Raise for the first finding in the raw text, blaming the field on that line if any."""
    doc = _try_parse(text)
    findings = keymaterial.scan_text(text, _taproot_keys_allowed(text, doc))
    if not findings:
        return
    first = findings[0]
    in_comment = _in_comment(text.splitlines()[first.line - 1], first.column)
    path = () if in_comment or doc is None else _path_on_line(doc, first.line)
    reason = ("in a comment: " if in_comment else "") + _reason(first.kind)
    raise ConfigError(_safe_path(path) or source, reason, first.line)


def _safe_path(path: FieldPath) -> str:
    """The dotted path with any key that is itself a secret replaced (never echo it)."""
    return format_path(
        tuple(p if isinstance(p, int) or not keymaterial.classify(p) else "<hidden>" for p in path)
    )


def _in_comment(line: str, column: int) -> bool:
    """Whether 1-based ``column`` is inside a YAML comment (a ``#`` outside quotes)."""
    if line.lstrip().startswith("#"):
        return True
    quote = ""
    for i, ch in enumerate(line[: column - 1]):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return True
    return False


def _try_parse(text: str) -> YamlDocument | None:
    try:
        return parse_yaml(text, "")
    except ConfigError:
        return None


def _is_descriptor(path: FieldPath) -> bool:
    """Whether ``path`` is ``wallets.<name>.descriptors[i]``."""
    return (
        len(path) == 4
        and path[0] == "wallets"
        and path[2] == "descriptors"
        and isinstance(path[3], int)
    )


def _taproot_keys_allowed(text: str, doc: YamlDocument | None) -> keymaterial.AllowHex:
    """For the raw scan: a 64-hex string is allowed only on the line a descriptor value starts
    on, outside a comment, and only when it is one of that value's taproot x-only keys. The
    values themselves are checked again, one by one, by ``refuse_values``. A file that is not
    valid YAML has no descriptors: every 64-hex string in it is refused."""
    allowed: dict[int, set[str]] = {}
    if doc is not None and isinstance(doc.data, dict):
        for path, value, is_key in _strings(doc.data, ()):
            line = doc.lines.get(path)
            if is_key or line is None or not _is_descriptor(path):
                continue
            keys = {value[a:b] for a, b in keymaterial.taproot_key_spans(value)}
            allowed.setdefault(line, set()).update(keys)
    lines = text.splitlines()

    def allow(line: int, column: int, hex_text: str) -> bool:
        return hex_text in allowed.get(line, ()) and not _in_comment(lines[line - 1], column)

    return allow


def _path_on_line(doc: YamlDocument, line: int) -> FieldPath:
    """The deepest field starting on ``line``."""
    on_line = [path for path, n in doc.lines.items() if n == line]
    return max(on_line, key=len, default=())


def refuse_values(doc: YamlDocument) -> None:
    """Raise for key material or a literal secret in any key or value, naming its path."""
    for path, value, is_key in _strings(doc.data, ()):
        where = _safe_path(path)
        line = doc.line_of(path)
        if is_key:
            _refuse_field_name(value, where, line)
        kind = keymaterial.classify(value, descriptor=not is_key and _is_descriptor(path))
        if kind is not None:
            raise ConfigError(where, _reason(kind), line)
    for path in _big_numbers(doc.data, ()):
        raise ConfigError(
            _safe_path(path),
            "a number this large (128 bits or more) may be a private key written as a YAML "
            "integer (hex, decimal or with underscores); no setting takes one. The value is "
            "not shown / 128 ビット以上の数値は秘密鍵の可能性があるため拒否します",
            doc.line_of(path),
        )
    for path, items in _string_lists(doc.data, ()):
        if keymaterial.classify_words(items):
            raise ConfigError(_safe_path(path), _reason(keymaterial.SEED), doc.line_of(path))


def _refuse_field_name(name: str, where: str, line: int | None) -> None:
    normal = name.lower().replace("-", "_")
    if normal in KEY_MATERIAL_FIELDS:
        raise ConfigError(where, f"a field for key material is not allowed; {_WATCH_ONLY}", line)
    if normal in LITERAL_SECRET_FIELDS:
        field = LITERAL_SECRET_FIELDS[normal]
        raise ConfigError(
            where, "a literal secret is not allowed; " + _USE_ENV.format(field=field), line
        )


def _strings(node: object, path: FieldPath) -> Iterator[tuple[FieldPath, str, bool]]:
    """(path, text, is_key) for every key and every string value, in document order."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key), key, True
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _strings(item, (*path, i))
    elif isinstance(node, str):
        yield path, node, False


def _big_numbers(node: object, path: FieldPath) -> Iterator[FieldPath]:
    """Integers of 128 bits or more, keys included: no setting needs one, and a private key
    written as a YAML integer (``0x1f_1f…``, ``!!int``, 77 decimal digits) would otherwise slip
    past every text pattern."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _big_numbers(key, (*path, str(key)))
            yield from _big_numbers(value, (*path, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _big_numbers(item, (*path, i))
    elif isinstance(node, int) and not isinstance(node, bool) and abs(node) >= 2**128:
        yield path


def _string_lists(node: object, path: FieldPath) -> Iterator[tuple[FieldPath, list[str]]]:
    """Every list of strings: a seed phrase may be written one word per item."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _string_lists(value, (*path, key))
    elif isinstance(node, list):
        if node and all(isinstance(item, str) for item in node):
            yield path, node
        for i, item in enumerate(node):
            yield from _string_lists(item, (*path, i))
