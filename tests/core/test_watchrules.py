"""Ignore globs of hot reload and sync, and the merge of change batches: pure, no event loop."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.watchrules import (
    DEFAULT_IGNORE,
    ChangeKind,
    FileChange,
    WatchRules,
    as_changes,
    collapse,
    glob_matches,
    merge_changes,
    normalize,
    summarize,
)

DEFAULTS = WatchRules.of()


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        "a/b/.git/objects/ab/cdef",
        "__pycache__/app.cpython-312.pyc",
        "pkg/__pycache__/x.pyc",
        "web/node_modules/react/index.js",
        "app.pyc",
        ".venv/lib/site.py",
        ".app.py.swp",
        "src/.app.py.swx",
        "4913",
        "src/app.py~",
        ".#app.py",
        "#app.py#",
        "app.py___jb_tmp___",
        ".mypy_cache/3.12/x.json",
    ],
)
def test_default_ignores_vcs_caches_dependencies_and_editor_temp_files(path: str) -> None:
    assert DEFAULTS.ignores(path)


@pytest.mark.parametrize(
    "path", ["app.py", "src/app.py", "static/app.js", "templates/index.html", "gitignore", "a.swpx"]
)
def test_default_keeps_source_files(path: str) -> None:
    assert DEFAULTS.matches(path)


@pytest.mark.parametrize(
    ("pattern", "path", "covered"),
    [
        ("*.log", "a/b/x.log", True),  # no '/': any depth
        ("build", "build/out/x.o", True),  # a directory covers what is under it
        ("build", "src/build/x", True),
        ("build/", "src/build/x", True),  # a trailing '/' does not anchor
        ("/dist", "dist/app.js", True),  # a leading '/' anchors at the root
        ("/dist", "web/dist/app.js", False),
        ("docs/*.md", "docs/a.md", True),
        ("docs/*.md", "docs/sub/a.md", False),  # '*' stays within one name
        ("docs/*.md", "x/docs/a.md", False),
        ("**/tmp/*.log", "tmp/x.log", True),  # '**' may be no directory at all
        ("**/tmp/*.log", "a/b/tmp/x.log", True),
        ("a/**/z", "a/z", True),
        ("a/**/z", "a/b/c/z", True),
        ("a/**/z", "b/a/z", False),
        ("gen/**", "gen/x/y.py", True),
        ("gen/**", "gen", True),
        ("**", "anything/at/all", True),
        ("file?.txt", "file1.txt", True),
        ("file?.txt", "file10.txt", False),
        ("[!a]*.py", "b.py", True),
        ("[!a]*.py", "a.py", False),
        ("[ab].py", "b.py", True),
        ("[", "[", True),  # an unclosed bracket is a literal
        ("", "x", False),
        ("./src/gen", "src/gen/x.py", True),
    ],
)
def test_glob_matches(pattern: str, path: str, covered: bool) -> None:
    assert glob_matches(pattern, path) is covered


def test_the_root_itself_is_never_ignored() -> None:
    assert DEFAULTS.matches(".") and DEFAULTS.matches("")


def test_without_defaults_only_the_users_globs_count() -> None:
    rules = WatchRules.of(["*.tmp"], defaults=False)
    assert rules.patterns == ("*.tmp",)
    assert rules.matches(".git/HEAD") and rules.ignores("x/y.tmp")
    assert WatchRules.of(["*.tmp"]).patterns == (*DEFAULT_IGNORE, "*.tmp")


# -- properties ------------------------------------------------------------------------------

name = st.text(st.sampled_from("abcxyz._-"), min_size=1, max_size=6).filter(
    lambda n: n not in (".", "..")
)
rel_path = st.lists(name, min_size=1, max_size=5).map("/".join)
simple_glob = st.text(st.sampled_from("abcxyz.*?"), min_size=1, max_size=5).filter(
    lambda g: g not in (".", "..")
)


@given(glob=simple_glob, path=rel_path)
def test_a_name_glob_covers_a_path_when_some_component_matches(glob: str, path: str) -> None:
    assert glob_matches(glob, path) == any(fnmatchcase(part, glob) for part in path.split("/"))


@given(glob=simple_glob, path=rel_path)
def test_double_star_prefix_is_the_same_as_a_name_glob(glob: str, path: str) -> None:
    assert glob_matches(f"**/{glob}", path) == glob_matches(glob, path)


@given(directory=rel_path, below=rel_path)
def test_a_literal_directory_covers_everything_beneath_it(directory: str, below: str) -> None:
    literal = "".join(f"[{c}]" if c in "*?[" else c for c in directory)
    assert glob_matches("/" + literal, f"{directory}/{below}")
    assert glob_matches("/" + literal + "/**", f"{directory}/{below}")


@given(before=st.lists(name, max_size=3), after=st.lists(name, max_size=3))
def test_anything_inside_a_git_directory_is_ignored(before: list[str], after: list[str]) -> None:
    assert DEFAULTS.ignores("/".join([*before, ".git", *after]))


@given(pattern=st.text(max_size=12), path=rel_path)
def test_no_pattern_breaks_matching(pattern: str, path: str) -> None:
    assert isinstance(WatchRules.of([pattern]).ignores(path), bool)


@given(path=rel_path)
def test_normalize_is_idempotent_and_ignores_dot_segments(path: str) -> None:
    assert normalize(normalize(path)) == normalize(path)
    assert normalize(f"./{path}/") == normalize(path)


# -- merging batches -------------------------------------------------------------------------

A, M, D = ChangeKind.ADDED, ChangeKind.MODIFIED, ChangeKind.DELETED


@pytest.mark.parametrize(
    ("kinds", "net"),
    [
        ([A, M], A),
        ([A, D], None),
        ([D, A], M),
        ([M, D], D),
        ([M, M], M),
        ([D, A, D], D),
        ([A, M, D, A], A),
    ],
)
def test_merge_keeps_the_net_effect(kinds: list[ChangeKind], net: ChangeKind | None) -> None:
    merged = merge_changes({}, [FileChange(kind, "f") for kind in kinds])
    assert merged.get("f") == net


# A file's life as seen from outside: which net kind describes going from `before` to `after`.
def _net(existed: bool, exists: bool, touched: bool) -> ChangeKind | None:
    if not existed and exists:
        return A
    if existed and not exists:
        return D
    if existed and exists and touched:
        return M
    return None


@given(st.lists(st.sampled_from(["create", "write", "delete"]), max_size=12), st.booleans())
def test_merge_of_a_valid_history_matches_the_files_fate(ops: list[str], existed: bool) -> None:
    exists, changes = existed, []
    for op in ops:  # only operations possible on the file's state at the time
        if op == "create" and not exists:
            exists = True
            changes.append(FileChange(A, "f"))
        elif op == "write" and exists:
            changes.append(FileChange(M, "f"))
        elif op == "delete" and exists:
            exists = False
            changes.append(FileChange(D, "f"))
    merged = merge_changes({}, changes).get("f")
    expected = _net(existed, exists, bool(changes))
    if existed and exists and changes:
        # deleted then created again reads as modified; never as added or nothing
        assert merged == M
    else:
        assert merged == expected


@given(st.lists(st.tuples(st.sampled_from([A, M, D]), rel_path), max_size=30), st.integers(0, 30))
def test_merging_in_two_steps_equals_merging_at_once(
    changes: list[tuple[ChangeKind, str]], split: int
) -> None:
    all_changes = [FileChange(kind, path) for kind, path in changes]
    at_once = merge_changes({}, all_changes)
    stepwise = merge_changes(merge_changes({}, all_changes[:split]), all_changes[split:])
    assert at_once == stepwise


def test_collapse_decides_an_unordered_batch_by_what_exists_now() -> None:
    assert collapse({M}, exists=True) is M
    assert collapse({A, D}, exists=True) is M  # an editor's delete-and-recreate save
    assert collapse({A, D}, exists=False) is D
    assert collapse({A, M}, exists=True) is A
    assert collapse({M, D}, exists=False) is D


def test_as_changes_and_summarize() -> None:
    changes = as_changes({"b.py": M, "a.py": A, "c.py": D, "d.py": M})
    assert [c.path for c in changes] == ["a.py", "b.py", "c.py", "d.py"]
    assert summarize(changes) == "a.py, b.py, c.py and 1 more"
    assert summarize(changes[:2]) == "a.py, b.py"
