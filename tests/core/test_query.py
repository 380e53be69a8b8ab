"""The filter language: parsing, matching, errors with positions, and the regex prefilter."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.events import Level, LogLine, SourceKind
from cockpit.core.query import Query, QueryError, parse_query, required_literals


def line(
    text: str = "",
    *,
    service: str = "store",
    source: str = "store-7d9f8c6b5-x2k4p/app",
    kind: SourceKind = SourceKind.POD,
    level: Level = Level.INFO,
) -> LogLine:
    return LogLine(source, service, kind, text, 0.0, level=level)


def query(text: str) -> Query:
    parsed = parse_query(text)
    assert isinstance(parsed, Query), parsed
    return parsed


def error(text: str) -> QueryError:
    parsed = parse_query(text)
    assert isinstance(parsed, QueryError), parsed
    return parsed


@pytest.mark.parametrize("text", ["", "   ", "\t \n"])
def test_an_empty_query_matches_everything(text: str) -> None:
    q = query(text)
    assert q.is_empty
    assert q.matches(line("anything"))
    assert q.predicate()(line(""))
    assert q.text == text


@pytest.mark.parametrize(
    ("text", "matching", "other"),
    [
        ("timeout", "DB Timeout after 3s", "all good"),
        ("TIMEOUT", "db timeout", "all good"),
        ("db timeout", "timeout talking to db", "timeout talking to cache"),  # AND, any order
        ('"after 3s"', "timeout after 3s", "3s after timeout"),
        ('"two  spaces"', "has two  spaces", "has two spaces"),
        (r'"say \"hi\""', 'they say "hi"', "they say hi"),
        ("!healthz", "GET /orders", "GET /healthz"),
        ('!"GET /healthz"', "GET /orders", "GET /healthz 200"),
        ("timeout !cache", "timeout in db", "timeout in cache"),
        ("straße", "STRASSE closed", "road closed"),  # casefold, not just lower
        ("http://store:8080", "calling http://store:8080/x", "calling store"),  # not a field
        ("error:", "error: boom", "an error happened"),
    ],
)
def test_words_phrases_and_negation(text: str, matching: str, other: str) -> None:
    q = query(text)
    assert q.matches(line(matching))
    assert not q.matches(line(other))


@pytest.mark.parametrize(
    ("text", "matching", "other"),
    [
        (r"/timeout after \d+ms/", "timeout after 31ms", "timeout after soon"),
        ("/timeout|refused/", "connection REFUSED", "all good"),  # lower case: ignores case
        ("/Timeout/", "Timeout!", "timeout!"),  # an upper-case letter: respects case
        ("/Timeout/i", "TIMEOUT!", "all good"),
        (r"/\d{3}ms/", "took 120MS", "took 12ms"),  # \d is no upper-case letter
        (r"/\Wok$/", "all ok", "allok"),
        (r"/GET \/ready/", "GET /ready", "GET /healthz"),
        ("/^$/", "", "x"),
        ("/a b/", "a b", "ab"),  # spaces inside a regex
        ("!/healthz|ready/", "GET /orders", "GET /ready"),
        (r"/status=5\d\d/", "status=503", "status=200"),
    ],
)
def test_regexes(text: str, matching: str, other: str) -> None:
    q = query(text)
    assert q.matches(line(matching))
    assert not q.matches(line(other))


def test_fields_svc_level_src_kind() -> None:
    store = line("x", service="store")
    web = line("x", service="web", source="web-6b7c9d8f5-q8wz2/web")
    local = line("x", service="api", source="api", kind=SourceKind.LOCAL, level=Level.ERROR)
    event = line("x", service="store", source="events", kind=SourceKind.EVENT, level=Level.WARNING)
    everything = [store, web, local, event]

    def selected(text: str) -> list[LogLine]:
        q = query(text)
        return [candidate for candidate in everything if q.matches(candidate)]

    assert selected("svc:store") == [store, event]
    assert selected("service:web") == [web]
    assert selected("svc:web,api") == [web, local]
    assert selected("svc:web|api") == [web, local]
    assert selected("svc:STORE") == [store, event]
    assert selected("!svc:store") == [web, local]
    assert selected("svc:sto") == []  # a service name, not a prefix
    assert selected("level:warn") == [local, event]
    assert selected("level:warning") == [local, event]
    assert selected("lvl:ERROR") == [local]
    assert selected("level:debug") == everything
    assert selected("!level:error") == [store, web, event]
    assert selected("src:7D9F") == [store]
    assert selected("source:web-") == [web]
    assert selected("kind:local") == [local]
    assert selected("kind:pod,event") == [store, web, event]
    assert selected("kind:events") == [event]
    assert selected("svc:store kind:pod") == [store]


def test_terms_combine_with_and_cheapest_first() -> None:
    q = query(r"svc:api level:error timeout !retry /after \d+ms/")
    hit = line("timeout after 31ms", service="api", level=Level.ERROR)
    assert q.matches(hit)
    assert not q.matches(line("timeout after 31ms", service="api", level=Level.INFO))
    assert not q.matches(line("timeout after 31ms", service="web", level=Level.ERROR))
    assert not q.matches(line("timeout after 31ms retry", service="api", level=Level.ERROR))
    assert not q.matches(line("timeout after soon", service="api", level=Level.ERROR))


@pytest.mark.parametrize(
    ("text", "position", "says"),
    [
        ("/a(/", 2, "bad /regex/"),
        ("ok /a(b/", 5, "bad /regex/"),
        ("/abc", 0, "unterminated /regex/"),
        ("x /[z-a]/", 4, "bad /regex/"),
        ("/x/q", 3, "unknown regex flag 'q'"),
        ("//", 0, "empty /regex/"),
        ('"abc', 0, 'unterminated "phrase"'),
        ('ok "abc', 3, 'unterminated "phrase"'),
        ("!", 0, "'!' needs a term"),
        ("ok ! x", 3, "'!' needs a term"),
        ("svc:", 4, "svc: needs a value"),
        ("level:", 6, "level: needs a value"),
        ("level:loud", 6, "unknown level 'loud'"),
        ("src:", 4, "src: needs a value"),
        ("kind:", 5, "kind: needs a value"),
        ("kind:pod,ship", 9, "unknown kind 'ship'"),
        ("svc:,", 4, "needs a value between the commas"),
    ],
)
def test_errors_say_what_and_where(text: str, position: int, says: str) -> None:
    err = error(text)
    assert says in err.message
    assert err.position == position
    assert "\n" not in err.message


def test_query_identity_is_its_text() -> None:
    assert query("svc:api") == query("svc:api")
    assert query("svc:api") != query("svc:web")
    assert len({query("a"), query("a"), query("b")}) == 2
    assert repr(query("a b")) == "Query('a b')"


@given(st.text(max_size=80))
def test_parse_query_never_raises(text: str) -> None:
    parsed = parse_query(text)
    assert isinstance(parsed, Query | QueryError)
    if isinstance(parsed, Query):
        parsed.matches(line("some text 123"))
    else:
        assert 0 <= parsed.position <= len(text)


@given(st.text(alphabet='ab !/:"\\|svclev', max_size=30))
def test_parse_query_never_raises_on_syntax_heavy_text(text: str) -> None:
    parsed = parse_query(text)
    if isinstance(parsed, QueryError):
        assert 0 <= parsed.position <= len(text)


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        ("timeout|refused", ("timeout", "refused")),
        (r"status=5\d\d|timeout after \d+ms", ("status=5", "timeout after ")),
        (r"a\.b+c", ("a.b",)),
        ("ab?cd", ("cd",)),
        ("xy*z", None),  # no run of two characters that every match contains
        ("x|", None),
        ("(ab)", None),
        ("[ab]cd", None),
        ("ab{2}", None),
    ],
)
def test_required_literals(pattern: str, literals: tuple[str, ...] | None) -> None:
    assert required_literals(pattern) == literals


@given(
    pattern=st.text(alphabet=r"abAB.|*+?\^$", min_size=1, max_size=10),
    text=st.text(alphabet="abAB.|*+?\\", max_size=20),
    ignore_case=st.booleans(),
)
def test_the_prefilter_never_changes_the_answer(pattern: str, text: str, ignore_case: bool) -> None:
    # smart case: an upper-case letter (outside an escape) makes the regex case-sensitive
    sensitive = not ignore_case and any(c.isupper() for c in re.sub(r"\\.", "", pattern))
    try:
        expected = re.search(pattern, text, 0 if sensitive else re.IGNORECASE) is not None
    except re.error:
        return
    parsed = parse_query(f"/{pattern}/{'i' if ignore_case else ''}")
    assert isinstance(parsed, Query)
    assert parsed.matches(line(text)) == expected
