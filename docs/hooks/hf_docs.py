"""mkdocs hooks: the pages generated at build time, so that they cannot drift from the code.

- `api/*.md`: one page per public module (docs/hooks/api_reference.py), each object rendered by mkdocstrings from its
  docstring.
- `reference/cli.md`: every `hf-unlearn` subcommand and option, read from the argparse parsers the command line
  itself builds (`hf_unlearn.cli.build_parser`; `train`'s from trl's parser over its dataclasses).
- `benchmarks/*.md`: examples/benchmarks/README.md and RESULTS.md as they are in the repository (links to scripts
  become links to the repository; the plots are copied).
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import importlib.util
import re
import sys
from pathlib import Path

HOOKS = Path(__file__).resolve().parent
#: The repository root. mkdocs, mkdocstrings and griffe are imported where they are used, so that the command line
#: reference renders (and tests/test_docs.py checks it) without the `docs` extra installed.
REPO = Path(__file__).resolve().parents[2]
GITHUB = "https://github.com/hf-unlearn/hf_unlearn/blob/main"


def _sibling(name: str):
    """A module of docs/hooks/ (mkdocs puts the hooks' folder on sys.path only while it loads this file)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HOOKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


#: Repository markdown files shown as pages: repository path -> page path.
MIRRORED = {
    "examples/benchmarks/README.md": "benchmarks/scripts.md",
    "examples/benchmarks/RESULTS.md": "benchmarks/tofu-mini.md",
    "examples/benchmarks/RESULTS_v2.md": "benchmarks/tofu-mini-v2.md",
}


# --- API reference ---------------------------------------------------------------------------------------------------


def api_slug(module_path: str) -> str:
    return "index" if module_path == "hf_unlearn" else module_path.removeprefix("hf_unlearn.")


def render_api_pages() -> dict[str, str]:
    """Page path -> markdown of every API page."""
    api = _sibling("api_reference")
    pkg = api.load_package()
    pages = api.api_pages(pkg)
    out = {}
    for module_path, line, rendered, elsewhere in pages:
        lines = [f"# `{module_path}`", "", line, ""]
        lines += [f"::: {module_path}", "    options:", "      members: false", "      show_root_heading: false", ""]
        for entry in rendered:
            lines += [f"::: {entry.path}", ""]
        if module_path == "hf_unlearn.losses":
            lines += ["## Built-in losses", "", "Each is registered by name: `get_loss(name)`.", ""]
            for entry in api.loss_entries(pkg):
                lines += [f"::: {entry.path}", "    options:", "      heading_level: 3", ""]
        if elsewhere:
            lines += ["## Also exported here", ""]
            lines += [f"- [`{entry.name}`][{entry.canonical}]" for entry in elsewhere]
            lines.append("")
        out[f"api/{api_slug(module_path)}.md"] = "\n".join(lines)
    return out


# --- command line reference ------------------------------------------------------------------------------------------


def _cell(text: object) -> str:
    text = " ".join(str(text).split())
    return html.escape(text, quote=False).replace("|", "\\|")


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    try:
        return parser._get_formatter()._expand_help(action)
    except (KeyError, TypeError, ValueError):
        return action.help


def _default(action: argparse.Action) -> str:
    default = action.default
    if default is None or default == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
        return ""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return ""
    text = repr(default) if not isinstance(default, str) else default
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"`{text}`" if text else '`""`'


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    return ", ".join(f"`{flag}`" for flag in action.option_strings)


def options_table(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> list[str]:
    lines = ["| option | default | help |", "|---|---|---|"]
    for action in actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        text = _help(parser, action)
        # The formatters' "(default: X)" suffix repeats the default column.
        text = text.removesuffix(f" (default: {action.default})")
        lines.append(f"| {_flags(action)} | {_default(action)} | {_cell(text)} |")
    return lines + [""]


def _train_sections() -> list[tuple[str, str, argparse.ArgumentParser, list[argparse.Action]]]:
    """`hf-unlearn train`'s options (trl's parser), grouped by the dataclass that declares them."""
    from trl import ModelConfig, SFTConfig

    from hf_unlearn.commands import train

    parser = train.make_parser()
    script, config = train.UnlearnScriptArguments, train.dataclass_types()[1]
    sft = {f.name for f in dataclasses.fields(SFTConfig)}
    groups = [
        ("Data and script options", "`UnlearnScriptArguments`", {f.name for f in dataclasses.fields(script)}),
        (
            "The unlearning objective",
            "the fields that [`UnlearningConfig`][hf_unlearn.config.UnlearningConfig] adds to trl's `SFTConfig`",
            {f.name for f in dataclasses.fields(config)} - sft,
        ),
        ("The model", "trl's `ModelConfig`", {f.name for f in dataclasses.fields(ModelConfig)}),
        ("Training", "trl's `SFTConfig` and transformers' `TrainingArguments`", sft),
    ]
    sections = []
    taken: set[int] = set()
    for title, source, names in groups:
        actions = [a for a in parser._actions if a.dest in names and id(a) not in taken and a.option_strings]
        taken.update(id(a) for a in actions)
        sections.append((title, source, parser, actions))
    rest = [
        a
        for a in parser._actions
        if id(a) not in taken and a.option_strings and not isinstance(a, argparse._HelpAction)
    ]
    if rest:
        sections.append(("Other options", "trl's parser", parser, rest))
    return sections


def render_cli_reference() -> str:
    from hf_unlearn.cli import build_parser
    from hf_unlearn.commands import COMMAND_MODULES

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in subparsers._choices_actions}
    lines = [
        "# Command line reference",
        "",
        "Generated when the documentation is built, from the parsers `hf-unlearn` itself builds",
        "(`hf_unlearn.cli.build_parser`, and trl's parser for `train`), so it lists exactly the options of this",
        "version. The [command line guide](../guides/cli.md) explains how the commands fit together.",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    names = list(subparsers.choices)
    lines += [f"| [`{name}`](#{name}) | {_cell(helps.get(name, ''))} |" for name in names]
    lines += ["", "`hf-unlearn --version` prints the version.", ""]
    for name in names:
        sub = subparsers.choices[name]
        lines += [f"## `hf-unlearn {name}` {{#{name}}}", "", _cell(helps.get(name, "")), ""]
        module = _command_module(name, COMMAND_MODULES)
        description = getattr(module, "DESCRIPTION", None)
        if description and description != helps.get(name):
            lines += ["```text", description.strip("\n"), "```", ""]
        if hasattr(module, "main"):  # its own parser (trl's): recipe keys and flags
            lines += [
                "`--config RECIPE.yaml` reads a YAML recipe. Every option below is a key of the recipe and a flag;",
                "the flag wins.",
                "",
            ]
            for title, source, own_parser, actions in _train_sections():
                lines += [f"### {title}", "", f"From {source}.", ""]
                lines += options_table(own_parser, actions)
        else:
            lines += ["```text", sub.format_usage().strip(), "```", ""]
            lines += options_table(sub, sub._actions)
    return "\n".join(lines)


def _command_module(name: str, modules: list[str]):
    import importlib

    for module_name in modules:
        module = importlib.import_module(f"hf_unlearn.commands.{module_name}")
        if module.NAME == name:
            return module
    raise KeyError(name)


# --- mirrored repository pages ---------------------------------------------------------------------------------------

LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def mirror(repo_path: str, page_path: str) -> tuple[str, dict[str, Path]]:
    """The markdown of a repository file as a docs page, and the images it needs (docs path -> file)."""
    source = REPO / repo_path
    text = source.read_text()
    images: dict[str, Path] = {}
    pages = {str((REPO / src).resolve()): dst for src, dst in MIRRORED.items()}

    def replace(match: re.Match) -> str:
        bang, label, target = match.groups()
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        anchor = f"#{anchor}" if anchor else ""
        if str(resolved) in pages:
            relative = Path(pages[str(resolved)]).relative_to(Path(page_path).parent)
            return f"{bang}[{label}]({relative.as_posix()}{anchor})"
        if bang and resolved.is_file():
            docs_path = (Path(page_path).parent / resolved.name).as_posix()
            images[docs_path] = resolved
            return f"{bang}[{label}]({resolved.name})"
        repo_relative = resolved.relative_to(REPO).as_posix()
        return f"{bang}[{label}]({GITHUB}/{repo_relative}{anchor})"

    return LINK.sub(replace, text), images


# --- mkdocs events ---------------------------------------------------------------------------------------------------

#: The navigation entry that the hook fills with one item per API page.
API_NAV_TITLE = "API"


def _expand_api_nav(nav: list) -> bool:
    for index, item in enumerate(nav):
        if not isinstance(item, dict):
            continue
        ((title, value),) = item.items()
        if title == API_NAV_TITLE:
            api = _sibling("api_reference")
            pages = api.api_pages(api.load_package())
            nav[index] = {title: [{path: f"api/{api_slug(path)}.md"} for path, *_ in pages]}
            return True
        if isinstance(value, list) and _expand_api_nav(value):
            return True
    return False


def on_config(config):
    """mkdocs.yml's `API` navigation entry becomes one item per API page, in api_reference.py's order."""
    if not _expand_api_nav(config["nav"]):
        raise ValueError(f"mkdocs.yml's nav has no {API_NAV_TITLE!r} entry for the API pages.")
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, content in render_api_pages().items():
        files.append(File.generated(config, path, content=content))
    files.append(File.generated(config, "reference/cli.md", content=render_cli_reference()))
    for repo_path, page_path in MIRRORED.items():
        content, images = mirror(repo_path, page_path)
        files.append(File.generated(config, page_path, content=content))
        for docs_path, image in images.items():
            files.append(File.generated(config, docs_path, abs_src_path=str(image)))
    return files
