"""Which browsers get the board's page data gzip-compressed: the Accept-Encoding header is the
browser's (or anyone's) to write, so odd and hostile ones must fall back to plain JSON."""

from __future__ import annotations

import pytest

from api.board import _accepts_gzip


@pytest.mark.parametrize(
    "header",
    ["gzip, deflate, br, zstd", "GZIP", "br;q=1.0, gzip;q=0.2", "*", "deflate, *;q=0.5"],
)
def test_a_header_that_admits_gzip_gets_it(header: str) -> None:
    assert _accepts_gzip(header)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "identity",
        "br, zstd",
        "gzip;q=0",
        "*;q=0",
        "gzip;q=0, *",  # a named gzip's weight counts over the wildcard's
        "gzip;q=nan",
        "gzip;q=lots",
        "gzip;q=-1",
        ";;;,,,==",
        ", " * 10_000 + "gzip",  # past the items a header is read for
    ],
)
def test_a_header_that_refuses_gzip_or_makes_no_sense_gets_plain_json(header: str) -> None:
    assert not _accepts_gzip(header)
