"""TorchServe's config.properties, read and written the way its frontend reads it (java.util.Properties).

Written by hand, not with a package: ops.instance reads configs with this module, and ops.follow, which
imports ops.instance, runs in the door's image on Debian's python3 with the standard library only. The
format is small; `loads` implements the whole of `Properties.load` (comments, continuation lines, the three
key separators, escapes), and `dumps` escapes what `load` would otherwise read differently, so that
`loads(dumps(props)) == props` for any keys and values. A value without a backslash, a leading blank, a
control character or a character outside ASCII is written as it is (`key=value`), as before.
"""

from __future__ import annotations

BLANKS = " \t\f"
SEPARATORS = "=:"
ESCAPED = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}  # \x for any other x is x itself
ESCAPES = {value: f"\\{name}" for name, value in ESCAPED.items()}


def loads(text: str) -> dict[str, str]:
    """The properties in `text`, as java.util.Properties.load reads them (a later key wins)."""
    props = {}
    for line in _logical_lines(text):
        key, rest = _split_key(line)
        props[_unescape(key)] = _unescape(rest)
    return props


def dumps(props: dict[str, str]) -> str:
    """`key=value` lines that `loads` (and Java) read back as `props`."""
    return "".join(f"{_escape(key, is_key=True)}={_escape(value, is_key=False)}\n" for key, value in props.items())


def _logical_lines(text: str):
    """Non-blank, non-comment lines with their continuations (an odd number of trailing backslashes) joined,
    leading blanks dropped from each natural line."""
    natural = iter(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    for line in natural:
        line = line.lstrip(BLANKS)
        if not line or line[0] in "#!":
            continue
        while _continues(line):
            line = line[:-1] + next(natural, "").lstrip(BLANKS)
        yield line


def _continues(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _split_key(line: str) -> tuple[str, str]:
    """(key, value), both still escaped: the key ends at the first unescaped blank, `=` or `:`; blanks and at
    most one `=` or `:` after it are the separator."""
    i = 0
    while i < len(line) and line[i] not in BLANKS + SEPARATORS:
        i += 2 if line[i] == "\\" else 1
    key, rest = line[:i], line[i:].lstrip(BLANKS)
    if rest[:1] and rest[0] in SEPARATORS:
        rest = rest[1:].lstrip(BLANKS)
    return key, rest


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(char)  # a lone trailing backslash: Java drops it, but only a continuation can leave one
            i += 1
        elif text[i + 1] == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or digits.strip("0123456789abcdefABCDEF"):
                raise ValueError(f"malformed \\uXXXX escape: {text[i : i + 6]!r}")  # Java refuses it too
            out.append(chr(int(digits, 16)))
            i += 6
        else:
            out.append(ESCAPED.get(text[i + 1], text[i + 1]))
            i += 2
    # Java strings are UTF-16: a character beyond the BMP was written as two \u escapes (a surrogate pair).
    return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")


def _escape(text: str, is_key: bool) -> str:
    out = []
    for i, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")  # regexes (allowed_urls) keep their backslashes
        elif char in ESCAPES:
            out.append(ESCAPES[char])
        elif char == " " and (is_key or i == 0):
            out.append("\\ ")  # a leading blank of a value would be taken for the separator
        elif is_key and (char in SEPARATORS or (i == 0 and char in "#!")):
            out.append("\\" + char)
        elif not " " <= char <= "~":  # control characters, and anything outside ASCII: the file stays ASCII
            out.extend(f"\\u{unit:04x}" for unit in _utf16_units(char))
        else:
            out.append(char)
    return "".join(out)


def _utf16_units(char: str) -> list[int]:
    data = char.encode("utf-16-be", "surrogatepass")
    return [int.from_bytes(data[j : j + 2], "big") for j in range(0, len(data), 2)]
