"""Sphinx configuration of the dasim documentation.

Build with ``nox -s docs`` or, in an environment with the ``docs`` extra installed::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Nothing here touches the network: intersphinx is off and MathJax is loaded by the reader's
browser. Environment variables:

``DASIM_DOCS_NO_GALLERY=1``
    Do not run the examples (the gallery pages are still written, without outputs).
``DASIM_DOCS_NO_MYST=1``
    Use the built-in markdown converter even when myst-parser is installed (to test it).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import warnings
from pathlib import Path

import dasim

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# -- Project ----------------------------------------------------------------------------
project = "dasim"
author = "dasim developers"
copyright = "dasim developers"  # noqa: A001 (Sphinx's name)
release = dasim.__version__
version = ".".join(release.split(".")[:2])

# -- Extensions -------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

_USE_MYST = importlib.util.find_spec("myst_parser") is not None and os.environ.get(
    "DASIM_DOCS_NO_MYST", ""
) in ("", "0")
if _USE_MYST:
    extensions.append("myst_parser")
    myst_enable_extensions = ["dollarmath"]
    myst_heading_anchors = 3

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    # Files a contributor may keep beside the pages without meaning them as pages.
    "**/README.md",
    # Stand-in gallery source used while examples/ has no GALLERY_HEADER.rst.
    "_gallery_placeholder",
]

# Plain names in types ("ndarray of shape (n, d)") are not cross-reference targets.
nitpicky = False
# The benchmark pages are markdown written by hand: a jump in heading level or a link to a
# file outside docs/ (a results folder, the benchmark plan) is not a documentation error.
# numpydoc "References" sections list papers without always citing them in the text.
suppress_warnings = ["myst.header", "myst.xref_missing", "ref.citation"]

# -- autodoc / autosummary / numpydoc ---------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autosummary_ignore_module_all = False
autodoc_default_options = {"member-order": "groupwise"}
autodoc_typehints = "none"  # types live in the numpydoc sections
add_module_names = False

numpydoc_show_class_members = False  # the class template lists methods instead
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()  # tests/test_docstrings.py validates docstrings

# Modules needing torch are documented from mocks when torch is not installed (the torch
# classes then show their docstrings without the torch base class).
if importlib.util.find_spec("torch") is None:
    autodoc_mock_imports = ["torch"]

# intersphinx is deliberately not enabled: builds must work without network access.

# -- HTML -------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"dasim {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": [], "api": []}
html_static_path = ["_static"] if (DOCS / "_static").is_dir() else []
html_show_sourcelink = False

# -- Examples gallery -------------------------------------------------------------------
EXAMPLES = ROOT / "examples"
_HEADERS = ("GALLERY_HEADER.rst", "GALLERY_HEADER.txt", "README.rst", "README.txt")


def _gallery_source():
    """The examples folder, or the placeholder when it has no gallery header yet.

    sphinx-gallery refuses a folder without a header file; until ``examples/`` has one the
    gallery shows ``docs/_gallery_placeholder`` (and the build warns if there are
    examples it would miss).
    """
    if EXAMPLES.is_dir() and any((EXAMPLES / name).is_file() for name in _HEADERS):
        return "../examples"
    return "_gallery_placeholder"


_GALLERY_SOURCE = _gallery_source()
warnings.filterwarnings(
    "ignore",
    message="Matplotlib is currently using agg, which is a non-GUI backend",
    category=UserWarning,
)

sphinx_gallery_conf = {
    "examples_dirs": _GALLERY_SOURCE,
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "plot_gallery": "False" if os.environ.get("DASIM_DOCS_NO_GALLERY") else "True",
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
    "min_reported_time": 1,
    "show_memory": False,
    "write_computation_times": True,
}


# -- Markdown without myst-parser -------------------------------------------------------
# When myst-parser is not installed, ``*.md`` pages (the benchmark reports) are converted
# to reStructuredText by the small converter below: ATX headings, pipe tables, images on
# their own line, fenced code, lists, links, inline code and bold. Anything else passes
# through as text, which is enough for generated reports.

_HEADING_CHARS = {1: "=", 2: "-", 3: "~", 4: "^", 5: '"', 6: "'"}
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_IMAGE = re.compile(r"^\s*!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)(?:\s+\"[^\"]*\")?\)\s*$")
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<url>[^)\s]+)\)")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_MATH = re.compile(r"(?<![\\$])\$([^$\s](?:[^$]*?[^$\s])?)\$(?![$\d])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def _rst_inline(text):
    """Convert markdown inline markup of one line or cell to reStructuredText."""
    pieces = []
    last = 0
    for match in _CODE.finditer(text):
        pieces.append(("text", text[last : match.start()]))
        pieces.append(("code", match.group(1)))
        last = match.end()
    pieces.append(("text", text[last:]))

    def link(match):
        url, label = match.group("url"), match.group("text")
        if "://" not in url and not url.startswith("mailto:"):
            target = (DOCS / url.split("#")[0]).resolve()
            if url.endswith(".md") and target.is_file() and DOCS in target.parents:
                return f":doc:`{label} <{url[:-3]}>`"
            return label  # an anchor, or a file outside the documentation
        return f"`{label} <{url}>`__"

    out = ""
    for kind, piece in pieces:
        if kind == "code":
            literal = f"``{piece}``"
            if out and (out[-1].isalnum() or out[-1] in "`*"):
                literal = "\\ " + literal
            out += literal
        else:
            piece = piece.replace("\\|", "|")
            piece = _LINK.sub(link, piece)
            piece = _BOLD.sub(r"**\1**", piece)
            piece = _MATH.sub(r":math:`\1`", piece)
            if out.endswith("``") and piece[:1].isalnum():
                piece = "\\ " + piece
            out += piece
    return out


def _split_row(line):
    cells, current, in_code = [], "", False
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and body[i + 1 : i + 2] == "|":
            current += "\\|"
            i += 2
            continue
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
        i += 1
    cells.append(current.strip())
    return cells


def _table(rows):
    header, body = rows[0], rows[1:]
    width = len(header)
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *body]:
        row = (row + [""] * width)[:width]
        for j, cell in enumerate(row):
            bullet = "   * - " if j == 0 else "     - "
            lines.append((bullet + _rst_inline(cell)).rstrip())
    lines.append("")
    return lines


def markdown_to_rst(text):
    """Convert the markdown of a benchmark report to reStructuredText."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    src = text.splitlines()
    out = []
    i = 0

    def blank():
        if out and out[-1] != "":
            out.append("")

    while i < len(src):
        line = src[i]
        stripped = line.strip()
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", line)
        if fence:
            marker, lang = fence.group(1), fence.group(2) or "text"
            blank()
            out += [f".. code-block:: {lang}", ""]
            i += 1
            while i < len(src) and not src[i].strip().startswith(marker):
                out.append("   " + src[i] if src[i].strip() else "")
                i += 1
            i += 1
            out.append("")
            continue
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if heading:
            title = _rst_inline(heading.group(2))
            blank()
            out += [title, _HEADING_CHARS[len(heading.group(1))] * (len(title) + 2), ""]
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(src) and _TABLE_SEP.match(src[i + 1]):
            rows = [_split_row(line)]
            i += 2
            while i < len(src) and src[i].strip().startswith("|"):
                rows.append(_split_row(src[i]))
                i += 1
            blank()
            out += _table(rows)
            continue
        image = _IMAGE.match(line)
        if image:
            blank()
            out += [f".. image:: {image.group('src')}", f"   :alt: {image.group('alt')}", ""]
            i += 1
            continue
        if _LIST_ITEM.match(line) and out and out[-1] != "" and not _LIST_ITEM.match(src[i - 1]):
            if not src[i - 1].startswith((" ", "\t")):
                blank()
        out.append(_rst_inline(line))
        i += 1
    return "\n".join(out) + "\n"


def _markdown_parser():
    from sphinx.parsers import RSTParser

    class MarkdownReportParser(RSTParser):
        """Parse markdown by converting it to reStructuredText first."""

        supported = ("markdown", "md")

        def parse(self, inputstring, document):
            if not isinstance(inputstring, str):
                inputstring = "\n".join(inputstring)
            super().parse(markdown_to_rst(inputstring), document)

    return MarkdownReportParser


# -- API reference completeness ---------------------------------------------------------
#: The modules documented in api.rst; every name in their ``__all__`` must be listed there.
API_MODULES = [
    "dasim.filters",
    "dasim.assimilators",
    "dasim.models",
    "dasim.observations",
    "dasim.datasets",
    "dasim.metrics",
    "dasim.compose",
    "dasim.plotting",
    "dasim.diffusion.kde",
    "dasim.diffusion.kde_sampling",
    "dasim.diffusion.schedules",
    "dasim.diffusion.denoising",
    "dasim.diffusion.networks",
    "dasim.diffusion.windows",
    "dasim.diffusion.training",
    "dasim.diffusion.sampling",
    "dasim.diffusion.guidance",
    "dasim.benchmarks",
    "dasim.exceptions",
    "dasim.cli",
]


def _api_listing(text):
    """Map module -> names listed under its ``currentmodule`` in api.rst."""
    listed, module, in_autosummary = {}, None, False
    for line in text.splitlines():
        current = re.match(r"^\.\. currentmodule::\s*(\S+)", line)
        if current:
            module, in_autosummary = current.group(1), False
            continue
        data = re.match(r"^\.\. (?:py:)?data::\s*(\S+)", line)
        if data and module:
            listed.setdefault(module, set()).add(data.group(1).rsplit(".", 1)[-1])
            continue
        if line.startswith(".. autosummary::"):
            in_autosummary = True
            continue
        if in_autosummary:
            entry = re.match(r"^\s+([A-Za-z_][\w.]*)\s*$", line)
            if entry and module:
                listed.setdefault(module, set()).add(entry.group(1))
            elif line and not line.startswith(" "):
                in_autosummary = False
    return listed


def _check_api_listing(app):
    from sphinx.util import logging

    logger = logging.getLogger("dasim.docs")
    listed = _api_listing((DOCS / "api.rst").read_text(encoding="utf-8"))
    for modname in API_MODULES:
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:
            logger.info(
                "[dasim] %s is not importable here (%s); its API entries are "
                "documented from what autodoc can import.",
                modname,
                exc,
            )
            continue
        missing = [n for n in getattr(module, "__all__", ()) if n not in listed.get(modname, ())]
        if missing:
            logger.warning(
                "[dasim] public names missing from docs/api.rst under %s: %s",
                modname,
                ", ".join(missing),
            )
    if _GALLERY_SOURCE != "../examples" and list(EXAMPLES.glob("plot_*.py")):
        logger.warning(
            "[dasim] examples/ has plot_*.py scripts but no GALLERY_HEADER.rst: "
            "the gallery cannot show them until that file exists."
        )


# -- Benchmark reports -----------------------------------------------------------------
_REPORTS_TOCTREE = re.compile(r"\.\. toctree::\n(?:[ ]+.*\n|\n)*?[ ]+benchmarks\*\n")


def _benchmark_reports(app, docname, source):
    """Say so on the benchmarks page when no report (``docs/benchmarks*.md``) exists yet."""
    if docname != "benchmarking" or list(DOCS.glob("benchmarks*.md")):
        return
    source[0] = _REPORTS_TOCTREE.sub(
        "No benchmark report is in this build yet: the reports are written to\n"
        "``docs/benchmarks*.md`` by the benchmark runs.\n",
        source[0],
    )


# -- Member filtering -------------------------------------------------------------------
def _skip_foreign_members(app, what, name, obj, skip, options):
    """Document only the members dasim defines: not scikit-learn's, torch's or object's."""
    if skip or what != "class":
        return skip
    target = obj.fget if isinstance(obj, property) else getattr(obj, "__func__", obj)
    module = getattr(target, "__module__", None) or ""
    if not module.startswith("dasim"):
        return True
    return None


def setup(app):
    if not _USE_MYST:
        app.add_source_parser(_markdown_parser())
    app.connect("builder-inited", _check_api_listing)
    app.connect("source-read", _benchmark_reports)
    app.connect("autodoc-skip-member", _skip_foreign_members)
    return {"parallel_read_safe": True}
