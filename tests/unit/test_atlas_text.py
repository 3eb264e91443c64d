"""What Atlas does to text, and the marker and description budget that survive it."""

from __future__ import annotations

import re

from dev.fakes.atlas import clean_text, like
from factorylm.cmms.atlas import DESCRIPTION_LIMIT, atlas_text, fit_description, marker


def test_the_marker_is_made_only_of_characters_atlas_stores_and_matches_verbatim() -> None:
    for key in ("drift-a/1", "wf/A&B<c>%_x", "wf/a&b<C>%_X", "é/ü"):
        mark = marker(key)
        assert re.fullmatch(r"\[factorylm-[0-9a-f]{32}\]", mark)
        assert clean_text(mark) == mark and mark.lower() == mark
    assert marker("wf/A&B<c>%_x") != marker("wf/a&b<C>%_X")


def test_the_local_atlas_cleans_text_as_the_real_server_was_seen_to() -> None:
    # Sent to the real Atlas and read back (docs/operations.md, Atlas CMMS).
    sent = "Desc a&b <tag> c>d \"q\" 'a' [factorylm:AbC_%] é\nline2  two  spaces"
    seen = "Desc a&amp;b  c&gt;d \"q\" 'a' [factorylm:AbC_%] é\nline2  two  spaces"
    assert clean_text(sent) == seen
    assert clean_text("T & <b>x</b> > y") == "T &amp; x &gt; y"


def test_the_budget_counts_what_atlas_stores_for_tagless_text() -> None:
    text = "a & b > c < d\u00a0e"
    assert atlas_text(text) == clean_text(text)


def test_like_has_sql_wildcards_and_nothing_else() -> None:
    assert like("a&amp;b", "%a&%") and like("axb", "a_b") and not like("ab", "a_b")
    assert like("[x]", "[x]") and not like("a_b", "a\\%b") and like("a%b", "a\\%b")


def test_a_description_within_the_limit_is_untouched_and_a_long_one_is_cut_with_a_note() -> None:
    tail = "\n\n" + marker("k")
    assert fit_description("short", tail) == ("short" + tail, False)
    text = "line & more\n" * 2000  # 24 000 characters, 32 000 as stored
    fitted, cut = fit_description(text, tail)
    assert cut and fitted.endswith(tail)
    assert len(atlas_text(fitted)) <= DESCRIPTION_LIMIT
    assert "cut to fit Atlas's 10000-character description" in fitted
    kept = fitted.split("\n\n[FactoryLM:")[0]
    assert text.startswith(kept) and kept.endswith("more")  # cut at a line end
    shown = re.search(r"\((\d+) of 24000 characters shown\)", fitted)
    assert shown is not None and int(shown.group(1)) == len(kept)
