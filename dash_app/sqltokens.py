"""A ClickHouse-compatible lexer for the SQL guard: tokens as the server will see them.

The guard must read a query the way ClickHouse's own lexer (``src/Parsers/Lexer.cpp``)
does, or a trick that one side reads as a comment or a quote and the other as
code slips through. So this follows it: ``--`` comments, ``#`` comments only
before a space or ``!``, nested ``/* */`` comments, ``'...'`` strings with
backslash escapes and doubled quotes, ``"..."`` and `` `...` `` quoted
identifiers (kept as names: `` `file`( `` is a call to ``file``), ``$tag$...$tag$``
heredocs, and ``\\G`` as a statement end. Where ClickHouse is more lenient than
this lexer wants to follow, it fails closed: any character outside printable
ASCII in the code (ClickHouse skips Unicode spaces such as U+200B, and reads
``“...”`` as a quoted identifier) and any unterminated quote or comment are
refused. Text inside strings, quoted names and comments may be any Unicode.

>>> [(t.kind, t.text) for t in tokenize("SELECT `a b`('x') -- c")]
[('word', 'SELECT'), ('name', 'a b'), ('punct', '('), ('string', "'x'"), ('punct', ')')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shardsense.errors import SqlRefused

__all__ = ["Token", "is_name", "tokenize"]

_WORD = re.compile(r"[A-Za-z0-9_$]+")
_SPACE = " \t\n\r\f\v"


@dataclass(frozen=True)
class Token:
    """One significant token.

    ``kind`` is ``word`` (bare identifier or keyword), ``name`` (quoted
    identifier; ``text`` is the name without quotes), ``string`` or ``punct``
    (one character, or ``\\G``).
    """

    kind: str
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        """The keyword this token spells, or '' when it is not a bare word."""
        return self.text.upper() if self.kind == "word" else ""

    def is_punct(self, char: str) -> bool:
        return self.kind == "punct" and self.text == char


def is_name(token: Token | None) -> bool:
    """A bare word or a quoted identifier: what can name a function or a table."""
    return token is not None and token.kind in ("word", "name")


def _syntax(message: str) -> SqlRefused:
    return SqlRefused(f"Refused: {message}.", code=62, name="SYNTAX_ERROR")


def _quoted_end(sql: str, start: int) -> int:
    """Index just past the quote closing the one at ``start`` (doubled quotes, escapes)."""
    quote, pos = sql[start], start + 1
    while pos < len(sql):
        char = sql[pos]
        if char == "\\":
            pos += 2
        elif char == quote:
            if sql.startswith(quote, pos + 1):
                pos += 2
                continue
            return pos + 1
        else:
            pos += 1
    what = {"'": "a string", '"': 'a "quoted" name', "`": "a `quoted` name"}[quote]
    raise _syntax(f"{what} is not closed")


def _comment_end(sql: str, start: int) -> int:
    """Index past the nested ``/* ... */`` comment starting at ``start``."""
    depth, pos = 1, start + 2
    while pos + 1 < len(sql):
        if sql.startswith("/*", pos):
            depth, pos = depth + 1, pos + 2
        elif sql.startswith("*/", pos):
            depth, pos = depth - 1, pos + 2
            if depth == 0:
                return pos
        else:
            pos += 1
    raise _syntax("a /* comment */ is not closed")


def _heredoc_end(sql: str, start: int) -> int:
    """Index past a ``$tag$ ... $tag$`` string at ``start``, or -1 when it is not one."""
    close = sql.find("$", start + 1)
    if close < 0:
        return -1
    tag = sql[start : close + 1]
    end = sql.find(tag, close + 1)
    return -1 if end < 0 else end + len(tag)


def _unquote(text: str) -> str:
    """The name inside a quoted identifier (escapes and doubled quotes undone)."""
    quote, body = text[0], text[1:-1]
    return re.sub(r"\\(.)", r"\1", body.replace(quote * 2, quote), flags=re.DOTALL)


def _skip(sql: str, pos: int) -> int:
    """Index past whitespace or a comment at ``pos``, or ``pos`` when there is none."""
    if sql[pos] in _SPACE:
        return pos + 1
    hash_comment = sql.startswith("#", pos) and sql[pos + 1 : pos + 2] in (" ", "!")
    if sql.startswith("--", pos) or hash_comment:
        end = sql.find("\n", pos)
        return len(sql) if end < 0 else end
    if sql.startswith("/*", pos):
        return _comment_end(sql, pos)
    return pos


def _next(sql: str, pos: int) -> Token:
    """The significant token starting at ``pos``."""
    char = sql[pos]
    if char in "'\"`":
        end = _quoted_end(sql, pos)
        if char == "'":
            return Token("string", sql[pos:end], pos, end)
        return Token("name", _unquote(sql[pos:end]), pos, end)
    if char == "$" and (end := _heredoc_end(sql, pos)) > 0:
        return Token("string", sql[pos:end], pos, end)
    if sql.startswith("\\G", pos):
        return Token("punct", "\\G", pos, pos + 2)
    word = _WORD.match(sql, pos)
    if word:
        return Token("word", word.group(0), pos, word.end())
    if not (char.isascii() and char.isprintable()):
        raise _syntax(
            f"character {char!r} (U+{ord(char):04X}) outside quotes; ClickHouse may read it "
            "as a space or a quote, so only ASCII is accepted in SQL code"
        )
    return Token("punct", char, pos, pos + 1)


def tokenize(sql: str) -> list[Token]:
    """The significant tokens of ``sql`` (no whitespace, no comments), or :class:`SqlRefused`.

    >>> [t.text for t in tokenize("/* a /* nested */ b */ SELECT 1 # note")]
    ['SELECT', '1']
    >>> tokenize("SELECT 'oops")
    Traceback (most recent call last):
    ...
    shardsense.errors.SqlRefused: Refused: a string is not closed.
    """
    tokens: list[Token] = []
    pos = 0
    while pos < len(sql):
        skipped = _skip(sql, pos)
        if skipped != pos:
            pos = skipped
            continue
        token = _next(sql, pos)
        tokens.append(token)
        pos = token.end
    return tokens
