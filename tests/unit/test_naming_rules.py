"""Session names: safe characters only, unique per project id (naming.py)."""

from __future__ import annotations

import re

import pytest

from tmux_orchestrator.naming import SLUG_MAX, is_safe_session_name, session_name_for, slugify

SAFE = re.compile(r"^[A-Za-z0-9_-]+$")

HOSTILE = [
    "my project",
    "a.b",
    "a:b",
    "a.b:c.d",
    "$x",
    "$HOME",
    "#{pid}",
    "#(touch f)",
    "x#(touch FILE)y",
    "'single'",
    '"double"',
    "back\\slash",
    "semi;colon",
    "tab\there",
    "new\nline",
    "=eq",
    "star*",
    "x%y",
    "ünïcödé",
    "项目",
    "emoji 🚀 rocket",
    "a" * 300,
    "",
    "   ",
    "---",
    "___",
    "-lead",
    "../../etc/passwd",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_slugify_keeps_only_safe_characters(name: str) -> None:
    slug = slugify(name)
    assert SAFE.match(slug), slug
    assert len(slug) <= SLUG_MAX
    assert not slug.startswith(("-", "_"))
    assert not slug.endswith(("-", "_"))


@pytest.mark.parametrize("name", HOSTILE)
def test_session_name_for_hostile_names_is_safe(name: str) -> None:
    for attempt in (1, 2, 17):
        session = session_name_for(123456, name, attempt)
        assert is_safe_session_name(session), session
        assert SAFE.match(session)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("my project", "my-project"),
        ("a.b:c", "a-b-c"),
        ("#{pid}", "pid"),
        ("#(touch f)", "touch-f"),
        ("$x", "x"),
        ("ünï", "uni"),
        ("'quoted'", "quoted"),
        ("", "project"),
        ("项目", "project"),
        ("!!!", "project"),
        ("keep_under-score", "keep_under-score"),
    ],
)
def test_slugify_examples(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_slugify_truncates_long_names() -> None:
    assert slugify("a" * 300) == "a" * SLUG_MAX
    assert slugify("ab-" * 100, max_length=10) == "ab-ab-ab-a"
    # a cut that would end on a separator drops it
    assert slugify("abcd-efgh", max_length=5) == "abcd"


def test_session_name_includes_id_and_attempt() -> None:
    assert session_name_for(7, "build") == "build-7"
    assert session_name_for(7, "build", 1) == "build-7"
    assert session_name_for(7, "build", 0) == "build-7"
    assert session_name_for(7, "build", 2) == "build-7-r2"


def test_session_names_are_unique_per_id_for_the_same_name() -> None:
    names = {session_name_for(i, "#(touch f)") for i in range(1, 1001)}
    assert len(names) == 1000


def test_session_names_unique_even_when_hostile_names_slug_alike() -> None:
    # different project names that slugify to the same text still get distinct sessions
    assert slugify("a.b") == slugify("a:b") == slugify("a b")
    assert len({session_name_for(1, "a.b"), session_name_for(2, "a:b"), session_name_for(3, "a b")}) == 3


def test_session_names_unique_across_attempts() -> None:
    assert len({session_name_for(5, "x", a) for a in range(1, 50)}) == 49


def test_job1_id_1_and_job10_are_distinct_names() -> None:
    one = session_name_for(1, "job1")
    ten = session_name_for(10, "job1")
    assert one == "job1-1"
    assert ten == "job1-10"
    assert one != ten
    # a job named "job10" with id 1 and a job "job1" with id 10 cannot collide either
    assert session_name_for(1, "job10") != session_name_for(10, "job1")
    # "job1-1" is a prefix of "job1-10": that is why exact (=name) targets are required
    assert ten.startswith(one)


@pytest.mark.parametrize(
    "name", ["job1", "job-1", "a_b", "A-Z_09", "x" * 100, "-x", "_tmo_keep"]
)
def test_is_safe_session_name_accepts(name: str) -> None:
    assert is_safe_session_name(name)


@pytest.mark.parametrize(
    "name",
    ["", " ", "a b", "a.b", "a:b", "$x", "#{pid}", "#(touch f)", "x" * 101, "ü", "a\nb", "\n", "a;", "'a'",
     "=a"],
)
def test_is_safe_session_name_rejects(name: str) -> None:
    assert not is_safe_session_name(name)
