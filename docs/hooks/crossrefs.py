"""A griffe extension: doc-builder's cross-references in hf_unlearn's docstrings become mkdocs-autorefs links.

The docstrings follow transformers' convention (CONTRIBUTING.md): [`Name`] and [`~module.Name`] (shown as `Name`).
Markdown alone renders them as literal brackets. Before mkdocstrings renders a docstring, this extension rewrites
each one to autorefs' `[`Name`][canonical.path]` when the name resolves to an object that the API reference
documents (`api_reference.py` decides which), and to plain `Name` code otherwise (a method of trl, a private
helper), so that no link is left dangling and `mkdocs build --strict` has nothing to warn about. The docstrings
themselves stay as they are: the same text serves `help()`, IDEs and this site.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import griffe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_reference import documented_paths  # noqa: E402

#: [`name`], [`~name`], [`name()`], not already a link ([`x`][y] or [`x`](y)).
CROSS_REFERENCE = re.compile(r"(?<!\[)\[`(~?)([A-Za-z_][\w.]*)(\(\))?`\](?![\[(])")
#: [`text`](hf_unlearn.dotted.path): a link whose target is a Python path, not a URL.
PATH_LINK = re.compile(r"\[`([^`\]]+)`\]\((hf_unlearn(?:\.\w+)*)\)")


def _resolve(obj: griffe.Object, pkg: griffe.Module, name: str, by_short_name: dict[str, str]) -> str | None:
    """The documented canonical path that `name`, written in `obj`'s docstring, refers to; None if there is none."""
    if name.startswith("hf_unlearn.") or name == "hf_unlearn":
        candidate = name
    else:
        head, _, rest = name.partition(".")
        try:
            candidate = obj.resolve(head) if obj.parent is not None or obj.is_module else None
        except (griffe.NameResolutionError, Exception):  # a name that is not in scope
            candidate = None
        if candidate is None:
            return by_short_name.get(name)
        candidate = f"{candidate}.{rest}" if rest else candidate
    if not candidate.startswith("hf_unlearn"):
        return None
    try:
        target = pkg[candidate.split(".", 1)[1]] if "." in candidate else pkg
        while target.is_alias:
            target = target.final_target
        canonical = target.path
    except Exception:  # noqa: BLE001  (not a loaded object: leave it as code)
        return None
    return canonical if canonical in _DOCUMENTED or candidate in _DOCUMENTED else None


_DOCUMENTED: set[str] = set()


def rewrite(text: str, obj: griffe.Object, pkg: griffe.Module, by_short_name: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        tilde, name, call = match.groups()
        shown = (name.rsplit(".", 1)[-1] if tilde else name) + (call or "")
        path = _resolve(obj, pkg, name, by_short_name)
        return f"[`{shown}`][{path}]" if path else f"`{shown}`"

    def replace_path_link(match: re.Match) -> str:
        shown, name = match.groups()
        path = _resolve(obj, pkg, name, by_short_name)
        return f"[`{shown}`][{path}]" if path else f"`{shown}`"

    return CROSS_REFERENCE.sub(replace, PATH_LINK.sub(replace_path_link, text))


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class DocBuilderCrossReferences(griffe.Extension):
    """Rewrite doc-builder cross-references in every docstring of the hf_unlearn package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        if pkg.name != "hf_unlearn":
            return
        _DOCUMENTED.clear()
        _DOCUMENTED.update(documented_paths(pkg))
        short: dict[str, set[str]] = {}
        for path in _DOCUMENTED:
            short.setdefault(path.rsplit(".", 1)[-1], set()).add(path)
        # A short name that is not in scope links only when every documented path of that name is the same object.
        by_short_name = {}
        for name, paths in short.items():
            canonical = {_canonical(pkg, path) for path in paths}
            if len(canonical) == 1:
                by_short_name[name] = canonical.pop()
        for obj in _walk(pkg):
            if obj.docstring is not None and "[`" in obj.docstring.value:
                obj.docstring.value = rewrite(obj.docstring.value, obj, pkg, by_short_name)


def _canonical(pkg: griffe.Module, path: str) -> str:
    try:
        target = pkg[path.split(".", 1)[1]]
        while target.is_alias:
            target = target.final_target
        return target.path
    except Exception:  # noqa: BLE001
        return path
