"""The shape of the code: imports flow adapters -> bot -> storage, and only settings read os.environ."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"storage": {"storage"}, "bot": {"bot", "storage"}, "adapters": {"adapters", "bot"}}
PLATFORM_SDKS = {"discord", "slack_bolt", "slack_sdk"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_imports_flow_one_way():
    for layer, allowed in ALLOWED.items():
        for path in (ROOT / layer).rglob("*.py"):
            ours = imports(path) & set(ALLOWED)
            assert ours <= allowed, f"{path.relative_to(ROOT)} imports {ours - allowed}"
            if layer != "adapters":
                assert not imports(path) & PLATFORM_SDKS, f"{path} imports a platform SDK"


def test_only_settings_reads_the_environment():
    for layer in ALLOWED:
        for path in (ROOT / layer).rglob("*.py"):
            if path.name == "settings.py":
                continue
            assert "os.environ" not in path.read_text() and "getenv" not in path.read_text(), path


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()[-1]
    assert ci in readme


def test_platform_adapters_use_only_the_neutral_types_and_the_runtime():
    """A platform adapter is a translation: it speaks bot.events and bot.runtime, nothing else of
    the core (the command line and the evaluation are not platform adapters)."""
    not_platforms = {"__init__.py", "cli.py", "commands.py", "evaluate.py", "load.py", "admin.py"}
    for path in (ROOT / "adapters").glob("*.py"):
        if path.name in not_platforms:
            continue
        ours = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] in {"bot", "storage"}
            ):
                ours.add(node.module)
            elif isinstance(node, ast.Import):
                ours.update(a.name for a in node.names if a.name.split(".")[0] in {"bot", "storage"})
        assert ours <= {"bot.events", "bot.runtime"}, f"{path.name} imports {ours}"
