"""A Sphinx extension for the book's bibliography: entries labelled by author and year ("Li et al., 2021"), as the
in-text citations are (``bibtex_reference_style: author_year``), instead of pybtex's alpha labels ("[LLO+21]").

Registered as the pybtex formatting style ``author_year`` (``bibtex_default_style`` in ``_config.yml``): pybtex's
``plain`` entries, sorted by author, year and title, with author-year labels.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle

NAME = "author_year"


def author_year(entry) -> str:
    """``Hinton et al., 2015``; ``Zagoruyko and Komodakis, 2016``; ``Friedman, 2001``."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [" ".join(p.prelast_names + p.last_names).replace("{", "").replace("}", "") for p in people]
    if not names:
        who = entry.fields.get("title", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries: Iterable) -> Iterator[str]:
        for entry in sorted_entries:
            yield author_year(entry)


class AuthorYearStyle(PlainStyle):
    default_label_style = NAME
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", NAME, AuthorYearLabels)
    register_plugin("pybtex.style.formatting", NAME, AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
