"""The log filter language: parse a query once, then test lines against it fast.

Terms are separated by spaces and all must match (AND):

* ``word``: case-insensitive substring of the line's text; ``"quoted phrase"`` keeps spaces.
* ``/regex/``: Python regex searched in the text. Smart case: a pattern with no upper-case
  letter ignores case, one with an upper-case letter respects it; ``/regex/i`` always
  ignores case. ``\\/`` is a literal slash inside the pattern.
* ``svc:NAME`` (or ``service:``): the line's service is NAME; ``svc:a,b`` is either.
* ``level:LEVEL`` (or ``lvl:``): the line's level is LEVEL or worse (``level:warn``).
* ``src:TEXT`` (or ``source:``): case-insensitive substring of the line's source (pod/container).
* ``kind:KIND``: pod, local, event or cockpit; ``kind:pod,event`` is either.
* ``!`` before any term inverts it: ``!healthz``, ``!svc:web``, ``!/GET \\/ready/``.

Any other ``word:with:colons`` is plain text. ``parse_query`` never raises: a query it cannot
use comes back as a ``QueryError`` with a message and the position to point at.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cockpit.core.events import Level, LogLine, SourceKind
from cockpit.core.levels import LEVEL_NAMES

Predicate = Callable[[LogLine], bool]


@dataclass(frozen=True, slots=True)
class QueryError:
    """Why a query cannot be used; ``position`` is the index in the query text to point at."""

    message: str
    position: int


_FIELD_ALIASES = {
    "svc": "svc",
    "service": "svc",
    "level": "level",
    "lvl": "level",
    "src": "src",
    "source": "src",
    "kind": "kind",
}
_KIND_NAMES: dict[str, SourceKind] = {
    "pod": SourceKind.POD,
    "pods": SourceKind.POD,
    "local": SourceKind.LOCAL,
    "event": SourceKind.EVENT,
    "events": SourceKind.EVENT,
    "cockpit": SourceKind.COCKPIT,
}
_REGEX_FLAGS = {"i"}
# Characters that make a regex more than a run of literal text.
_REGEX_SPECIAL = frozenset("\\.^$*+?{}[]()|")


@dataclass(slots=True)
class _Terms:
    """A parsed query, grouped by how each kind of term is tested."""

    words: list[str]  # casefolded substrings that must be in the text
    not_words: list[str]  # casefolded substrings that must not be
    checks: list[Predicate]  # field tests: cheap attribute compares, run first
    regex_checks: list[Predicate]  # regexes last: they cost the most


class Query:
    """A parsed filter. ``matches(line)`` is the compiled test; ``text`` is what was typed."""

    __slots__ = ("_match", "text")

    def __init__(self, text: str, match: Predicate | None = None) -> None:
        self.text = text
        self._match = match

    @property
    def is_empty(self) -> bool:
        """True when the query has no terms: every line matches."""
        return self._match is None

    def matches(self, line: LogLine) -> bool:
        match = self._match
        return True if match is None else match(line)

    def predicate(self) -> Predicate:
        """The bare test, for loops over many lines (saves a call per line)."""
        match = self._match
        return match if match is not None else _always

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Query) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Query({self.text!r})"


def _always(line: LogLine) -> bool:
    return True


def parse_query(text: str) -> Query | QueryError:
    """Parse a filter query; never raises. An empty (or blank) query matches every line."""
    try:
        return Query(text, _compile(_Parser(text).parse()))
    except _ParseFailure as failure:
        return QueryError(failure.message, failure.position)
    except Exception as exc:  # a parser bug must not take the filter box down with it
        return QueryError(f"cannot use this query: {exc}", 0)


class _ParseFailure(Exception):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.terms = _Terms([], [], [], [])

    def parse(self) -> _Terms:
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            if self.pos >= len(text):
                return self.terms
            self._term()

    def _term(self) -> None:
        text = self.text
        start = self.pos
        negate = False
        if text[self.pos] == "!":
            negate = True
            self.pos += 1
            if self.pos >= len(text) or text[self.pos].isspace():
                raise _ParseFailure("'!' needs a term right after it, like !healthz", start)
        char = text[self.pos]
        if char == '"':
            self._words(self._quoted(), negate)
        elif char == "/":
            self._add(self._regex(), negate, regex=True)
        else:
            word_at = self.pos
            word = self._bare_word()
            name, colon, value = word.partition(":")
            field = _FIELD_ALIASES.get(name.lower()) if colon else None
            if field is None:
                self._words(word, negate)
            else:
                value_at = word_at + len(name) + 1
                self._add(self._field(field, name, value, value_at), negate, regex=False)

    def _bare_word(self) -> str:
        text = self.text
        start = self.pos
        while self.pos < len(text) and not text[self.pos].isspace():
            self.pos += 1
        return text[start : self.pos]

    def _quoted(self) -> str:
        text = self.text
        open_at = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in '"\\':
                chars.append(text[self.pos + 1])
                self.pos += 2
                continue
            if char == '"':
                self.pos += 1
                return "".join(chars)
            chars.append(char)
            self.pos += 1
        raise _ParseFailure('unterminated "phrase": add the closing "', open_at)

    def _regex(self) -> Predicate:
        text = self.text
        open_at = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text):
                following = text[self.pos + 1]
                # "\/" is a slash inside the pattern; every other escape goes to the regex
                chars.append("/" if following == "/" else char + following)
                self.pos += 2
                continue
            if char == "/":
                break
            chars.append(char)
            self.pos += 1
        else:
            raise _ParseFailure("unterminated /regex/: add the closing /", open_at)
        self.pos += 1  # the closing slash
        flags_at = self.pos
        flags = self._bare_word()
        unknown = set(flags) - _REGEX_FLAGS
        if unknown:
            bad = min(flags.index(flag) for flag in unknown)
            raise _ParseFailure(
                f"unknown regex flag {flags[bad]!r} after /regex/: only i (ignore case)",
                flags_at + bad,
            )
        pattern = "".join(chars)
        if not pattern:
            raise _ParseFailure("empty /regex/: put a pattern between the slashes", open_at)
        return _regex_predicate(pattern, "i" in flags or not _has_upper(pattern), open_at)

    def _words(self, phrase: str, negate: bool) -> None:
        needle = phrase.casefold()
        if not needle:
            return  # "" matches every line; !"" would match none: both mean nothing typed
        (self.terms.not_words if negate else self.terms.words).append(needle)

    def _add(self, check: Predicate, negate: bool, *, regex: bool) -> None:
        if negate:
            check = _negated(check)
        (self.terms.regex_checks if regex else self.terms.checks).append(check)

    def _field(self, field: str, name: str, value: str, value_at: int) -> Predicate:
        if not value:
            examples = {
                "svc": "svc:api or svc:api,web",
                "level": "level:warn",
                "src": "src:store-7d9f",
                "kind": "kind:pod or kind:event",
            }
            raise _ParseFailure(f"{name}: needs a value, like {examples[field]}", value_at)
        if field == "level":
            level = LEVEL_NAMES.get(value.lower())
            if level is None:
                raise _ParseFailure(
                    f"unknown level {value!r}: use debug, info, warn, error or fatal", value_at
                )
            return _level_at_least(level)
        if field == "src":
            return _source_contains(value.casefold())
        names = [part for part in re.split(r"[,|]", value) if part]
        if not names:
            raise _ParseFailure(f"{name}: needs a value between the commas", value_at)
        if field == "svc":
            # Service names are Kubernetes (DNS-1035) names: lower case.
            return _service_in(frozenset(part.lower() for part in names))
        kinds: set[SourceKind] = set()
        offset = value_at
        for part in value.split(","):
            for sub in part.split("|"):
                kind = _KIND_NAMES.get(sub.lower())
                if sub and kind is None:
                    raise _ParseFailure(
                        f"unknown kind {sub!r}: use pod, local, event or cockpit", offset
                    )
                if kind is not None:
                    kinds.add(kind)
                offset += len(sub) + 1
        return _kind_in(frozenset(kinds))


def _has_upper(pattern: str) -> bool:
    # Escapes like \S, \W, \D are classes, not upper-case letters the user typed.
    return any(char.isupper() for char in re.sub(r"\\.", "", pattern))


def _regex_predicate(pattern: str, ignore_case: bool, open_at: int) -> Predicate:
    try:
        compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        # exc.pos indexes the pattern; +1 for the opening slash (escapes of "/" shift it
        # by one at most, close enough to point at the spot).
        where = open_at + 1 + (exc.pos or 0)
        raise _ParseFailure(f"bad /regex/: {exc.msg}", where) from None
    except (OverflowError, RecursionError, ValueError) as exc:
        raise _ParseFailure(f"bad /regex/: {exc}", open_at) from None
    search = compiled.search
    literals = required_literals(pattern)
    if literals is None:
        return lambda line: search(line.text) is not None
    # Most lines fail a cheap substring prefilter, so the regex engine only runs on lines
    # that can match (the trick ripgrep uses). casefold() keeps the prefilter a necessary
    # condition under IGNORECASE.
    if ignore_case:
        folded = tuple(literal.casefold() for literal in literals)
        if len(folded) == 1:
            (needle,) = folded

            def one_folded(line: LogLine) -> bool:
                text = line.text
                return needle in text.casefold() and search(text) is not None

            return one_folded

        def any_folded(line: LogLine) -> bool:
            text = line.text
            folded_text = text.casefold()
            for literal in folded:
                if literal in folded_text:
                    return search(text) is not None
            return False

        return any_folded
    if len(literals) == 1:
        (needle,) = literals

        def one(line: LogLine) -> bool:
            text = line.text
            return needle in text and search(text) is not None

        return one

    def any_of(line: LogLine) -> bool:
        text = line.text
        for literal in literals:
            if literal in text:
                return search(text) is not None
        return False

    return any_of


def required_literals(pattern: str) -> tuple[str, ...] | None:
    """One literal per top-level alternative that any match of ``pattern`` must contain.

    A line without any of them cannot match, so the test can skip the regex engine. None
    when the pattern is not simple enough to tell (groups, inline flags, a branch without a
    run of at least two plain characters).
    """
    if "(" in pattern or "[" in pattern or "{" in pattern:
        return None
    branches = _split_branches(pattern)
    literals: list[str] = []
    for branch in branches:
        best = _longest_required_run(branch)
        if len(best) < 2:
            return None
        literals.append(best)
    return tuple(literals)


def _split_branches(pattern: str) -> list[str]:
    branches: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            current.append(pattern[index : index + 2])
            index += 2
            continue
        if char == "|":
            branches.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    branches.append("".join(current))
    return branches


def _longest_required_run(branch: str) -> str:
    """The longest run of literal characters every match of ``branch`` (no groups) contains."""
    runs: list[str] = []
    run: list[str] = []
    index = 0
    while index < len(branch):
        char = branch[index]
        literal: str | None = None
        width = 1
        if char == "\\":
            following = branch[index + 1 : index + 2]
            width = 2
            # Escaped punctuation is that character; \d, \w, \b, \1... are not literals.
            if following and not following.isalnum():
                literal = following
        elif char not in _REGEX_SPECIAL:
            literal = char
        after = branch[index + width : index + width + 1]
        if literal is not None and after and after in "*?{":
            literal = None  # optional (or repeated a counted number of times): not required
            runs.append("".join(run))
            run = []
            index += width
            continue
        if literal is None:
            runs.append("".join(run))
            run = []
        else:
            run.append(literal)
            if after == "+":
                # "a+" requires one "a", then the run cannot continue across the repeat
                runs.append("".join(run))
                run = []
        index += width
    runs.append("".join(run))
    return max(runs, key=len)


def _negated(check: Predicate) -> Predicate:
    return lambda line: not check(line)


def _level_at_least(level: Level) -> Predicate:
    return lambda line: line.level >= level


def _source_contains(needle: str) -> Predicate:
    return lambda line: needle in line.source.casefold()


def _service_in(names: frozenset[str]) -> Predicate:
    if len(names) == 1:
        (name,) = names
        return lambda line: line.service == name
    return lambda line: line.service in names


def _kind_in(kinds: frozenset[SourceKind]) -> Predicate:
    return lambda line: line.kind in kinds


def _compile(terms: _Terms) -> Predicate | None:
    """One test for the whole query, cheapest parts first so most lines exit early."""
    checks: list[Predicate] = list(terms.checks)
    words, not_words = terms.words, terms.not_words
    if words or not_words:
        checks.append(_words_predicate(tuple(words), tuple(not_words)))
    checks.extend(terms.regex_checks)
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda line: first(line) and second(line)
    all_checks = tuple(checks)
    return lambda line: all(check(line) for check in all_checks)


def _words_predicate(words: tuple[str, ...], not_words: tuple[str, ...]) -> Predicate:
    # One casefold() of the text per line, shared by every word of the query.
    if len(words) == 1 and not not_words:
        (word,) = words
        return lambda line: word in line.text.casefold()
    if not words and len(not_words) == 1:
        (not_word,) = not_words
        return lambda line: not_word not in line.text.casefold()

    def test(line: LogLine) -> bool:
        folded = line.text.casefold()
        for word in words:
            if word not in folded:
                return False
        return all(not_word not in folded for not_word in not_words)

    return test
