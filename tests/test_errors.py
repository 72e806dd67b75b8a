"""Error messages: values quoted short, paths cut in the middle, one line of bounded length, flags renamed."""

from __future__ import annotations

from eplb_cli.errors import MAX_MESSAGE, EplbError, arg, count_text, listing, one_line, quote, render, shorten


def test_quote_cuts_long_values_with_an_ellipsis() -> None:
    assert quote("abc") == "'abc'"
    assert quote("x" * 50_000_000) == "'" + "x" * 40 + "'..."
    assert quote(7) == "7"
    assert len(quote(list(range(10**6)))) <= 43


def test_quote_never_recurses_into_a_deep_list() -> None:
    deep: list = [1]
    for _ in range(50_000):
        deep = [deep]
    assert quote(deep) == "[[[...]]]"


def test_shorten_keeps_both_ends_of_a_path() -> None:
    path = "/data/" + "d/" * 200 + "trace.safetensors"
    cut = shorten(path, 60)
    assert len(cut) == 60 and cut.startswith("/data/") and cut.endswith("trace.safetensors") and "..." in cut
    assert shorten("short.csv") == "short.csv"


def test_listing_stops_before_it_is_long() -> None:
    names = [f"column_{i}" for i in range(200_000)]
    text = listing(names)
    assert text.startswith("column_0, column_1") and text.endswith("...") and len(text) < 100


def test_one_line_and_its_length() -> None:
    assert one_line("a\nb\t c") == "a b c"
    long = one_line("word " * 1000)
    assert len(long) == MAX_MESSAGE and long.endswith("...")


def test_count_text() -> None:
    assert count_text(1234567) == "1,234,567"
    assert count_text(10**100) == "1e+100"


def test_huge_values_in_arg_are_cut() -> None:
    message = f"{arg('gpus', 10**100)}: too many"
    text = render(message)
    assert text.startswith("gpus=1000") and text.endswith("000: too many") and "..." in text
    assert len(text) == len("gpus=: too many") + 80
    assert EplbError(message).render(lambda name, value: f"--{name} {value}").startswith("--gpus 1000")
