"""What the API reference documents, read from the source with griffe (nothing is imported).

Shared by the mkdocs hook (`hf_docs.py`, which writes one page per module below) and the griffe extension
(`crossrefs.py`, which links the docstrings' [`Name`] references to those pages), so that the two agree on what is
documented.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import griffe

REPO = Path(__file__).resolve().parents[2]

#: The public modules, in the order of the navigation: (module, one line). Every other package of hf_unlearn with an
#: `__all__`, and every top-level module with one, gets a page too, after these (see `api_modules`), so that a new
#: public package is documented without a change here. A package's public names are its `__all__`; a module without
#: `__all__` (listed here) documents the public names it defines.
API_MODULES: list[tuple[str, str]] = [
    ("hf_unlearn", "The names most programs need: the config, the trainer, the loss registry, TOFU."),
    ("hf_unlearn.losses", "The loss registry, the loss context and every built-in loss."),
    ("hf_unlearn.data", "TOFU loading, prompt encoding, dataset preparation, the collator."),
    ("hf_unlearn.trainer", "The unlearning trainer and its factory."),
    ("hf_unlearn.gru", "GRU's gradient rectification."),
    ("hf_unlearn.grun", "GRUN: gated LoReFT edits, their trainer and their files."),
    ("hf_unlearn.methods", "The registry of kinds of unlearned models (full, peft, GRUN)."),
    ("hf_unlearn.evaluation", "TOFU, MUSE, lm-eval, metrics, callbacks and plots."),
    ("hf_unlearn.evaluation.robustness", "Attacks on an unlearned model."),
    ("hf_unlearn.analysis", "The G-effect: how a step moves the forget and retain risks."),
    ("hf_unlearn.hub", "Model cards, pushing and loading unlearned models."),
    ("hf_unlearn.unlearning_state", "The schema of `unlearning.json`."),
    ("hf_unlearn.reference", "The reference model of losses that need one."),
    ("hf_unlearn.modeling", "Finding a model's decoder layers."),
    ("hf_unlearn.citations", "The papers that hf_unlearn implements."),
    ("hf_unlearn.exceptions", "Exceptions."),
]
#: Not API pages: the command line (its own reference, generated from the parsers) and the demo's internals.
NOT_API = {"hf_unlearn.commands", "hf_unlearn.demo", "hf_unlearn.cli"}


def api_modules(pkg: griffe.Module) -> list[tuple[str, str]]:
    """API_MODULES, then every other package with an `__all__` and every top-level module with one."""
    listed = [path for path, _ in API_MODULES]
    found = []

    def visit(module: griffe.Module) -> None:
        for name, member in module.members.items():
            if member.is_alias or not member.is_module or name.startswith("_"):
                continue
            path = member.path
            if path in NOT_API:
                continue
            top_level = module.path == "hf_unlearn"
            if (member.is_package or top_level) and member.exports is not None and path not in listed:
                found.append((path, (member.docstring.value.split("\n")[0] if member.docstring else "")))
            if member.is_package:
                visit(member)

    visit(pkg)
    return API_MODULES + sorted(found)


#: Modules whose classes are documented on another module's page, under a heading: the built-in losses (registered
#: by name, not exported) on the losses page.
EXTRA_SECTIONS: dict[str, tuple[str, str]] = {
    "hf_unlearn.losses": ("Built-in losses", "hf_unlearn.losses"),
}
#: Modules of hf_unlearn.losses that are not losses.
LOSS_INFRASTRUCTURE = {"base", "registry"}


@dataclass(frozen=True)
class Entry:
    """One documented object: its name, the path the page renders it at, and its canonical path."""

    name: str
    path: str
    canonical: str
    kind: str


def load_package() -> griffe.Module:
    return griffe.load("hf_unlearn", search_paths=[str(REPO)], resolve_aliases=False)


def module_of(pkg: griffe.Module, path: str) -> griffe.Module:
    parts = path.split(".")[1:]
    module = pkg
    for part in parts:
        module = module.members[part]
    return module


def public_names(module: griffe.Module) -> list[str]:
    """The module's `__all__`, else the public names it defines itself (not what it imports)."""
    exports = module.exports
    if exports is not None:
        return [name if isinstance(name, str) else name.name for name in exports]
    return [name for name, member in module.members.items() if not name.startswith("_") and not member.is_alias]


def _target(obj: griffe.Object | griffe.Alias) -> griffe.Object:
    while obj.is_alias:
        obj = obj.final_target
    return obj


def _member(module: griffe.Module, name: str) -> griffe.Object:
    """`module.name`, followed through imports; a name exported lazily (in `__all__` and a module-level
    `__getattr__`, without an import griffe can see) is looked up in the package's submodules."""
    if name in module.members:
        return _target(module.members[name])
    for submodule in module.modules.values():
        member = submodule.members.get(name)
        if member is not None and not member.is_alias:
            return member
    raise LookupError(
        f"{module.path}.__all__ names {name!r}, which neither {module.path} nor its submodules define or import: "
        "import it under `if TYPE_CHECKING:` so that the API reference can find it."
    )


def loss_entries(pkg: griffe.Module) -> list[Entry]:
    """The classes of the built-in loss modules (hf_unlearn/losses/<name>.py), in file order."""
    losses = module_of(pkg, "hf_unlearn.losses")
    entries = []
    for name in sorted(losses.modules):
        if name in LOSS_INFRASTRUCTURE:
            continue
        for member_name, member in losses.modules[name].members.items():
            if not member.is_alias and member.is_class and not member_name.startswith("_"):
                entries.append(Entry(member_name, member.path, member.path, "class"))
    return entries


def api_pages(pkg: griffe.Module | None = None) -> list[tuple[str, str, list[Entry], list[Entry]]]:
    """For each API module: (module, line, entries rendered here, entries rendered on an earlier page).

    Each object is rendered once, on the first page that exports it; a later page links to it."""
    pkg = pkg or load_package()
    seen: set[str] = set()
    pages = []
    for module_path, line in api_modules(pkg):
        module = module_of(pkg, module_path)
        rendered, elsewhere = [], []
        names = public_names(module)
        extra = loss_entries(pkg) if module_path in EXTRA_SECTIONS else []
        for name in names:
            target = _member(module, name)
            # Rendered at the path users import it from, or (a lazy export griffe cannot follow) where it is defined.
            path = f"{module_path}.{name}" if name in module.members else target.path
            entry = Entry(name, path, target.path, target.kind.value)
            if target.path in seen:
                elsewhere.append(entry)
            else:
                seen.add(target.path)
                rendered.append(entry)
        for entry in extra:
            if entry.canonical not in seen:
                seen.add(entry.canonical)
        pages.append((module_path, line, rendered, elsewhere))
    return pages


def documented_paths(pkg: griffe.Module) -> set[str]:
    """Every path an autorefs link may point at: each rendered object (by the path it is rendered at and its
    canonical path) and the members that mkdocstrings renders with it (public, declared there, with a docstring)."""
    paths: set[str] = set()
    entries = [entry for page in api_pages(pkg) for entry in page[2]] + loss_entries(pkg)
    for entry in entries:
        paths.update({entry.path, entry.canonical})
        obj = _target(pkg[entry.canonical.split(".", 1)[1]])
        if obj.is_class:
            for member_name, member in obj.members.items():
                if member.is_alias or member_name.startswith("_") or not member.docstring:
                    continue
                paths.update({f"{entry.path}.{member_name}", f"{entry.canonical}.{member_name}"})
    return paths
