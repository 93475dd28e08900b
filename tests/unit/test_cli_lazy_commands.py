"""The CLI imports a command's module only when it runs: the map of commands to modules is right."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click

from tmux_orchestrator import __version__
from tmux_orchestrator.cli.app import COMMAND_MODULES, cli


def test_every_mapped_command_lives_in_its_module() -> None:
    for module, names in COMMAND_MODULES.items():
        before = set(cli.commands)
        importlib.import_module(module)
        registered = set(cli.commands)
        for name in names:
            assert name in registered, f"{name} is not registered by {module}"
        assert before <= registered


def test_every_command_is_mapped() -> None:
    ctx = click.Context(cli)
    listed = set(cli.list_commands(ctx))
    mapped = {name for names in COMMAND_MODULES.values() for name in names}
    assert listed == mapped, f"not in COMMAND_MODULES: {listed - mapped}; stale: {mapped - listed}"


def test_tmo_list_does_not_import_the_daemon_or_tmux_layers() -> None:
    code = (
        "import sys\n"
        "from tmux_orchestrator.cli import cli\n"
        "cmd = cli.get_command(None, 'list')\n"
        "assert cmd is not None\n"
        "names = ('tmux_orchestrator.daemon', 'tmux_orchestrator.tmux',\n"
        "         'tmux_orchestrator.orchestrator', 'tmux_orchestrator.dispatch')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_package_names_are_still_importable_from_the_top() -> None:
    import tmux_orchestrator

    for name in ("Orchestrator", "TmuxOrchestratorScheduler", "OrchestratorError", "Outcome", "Project",
                 "ProjectStatus", "Settings", "load_settings", "TmuxSessionManager"):
        assert getattr(tmux_orchestrator, name) is not None
        assert name in dir(tmux_orchestrator)
    try:
        tmux_orchestrator.NoSuchThing  # noqa: B018
    except AttributeError:
        pass
    else:
        raise AssertionError("unknown attributes must raise AttributeError")


def test_version_is_answered_before_click_or_the_settings_load() -> None:
    code = (
        "import sys\n"
        "from tmux_orchestrator.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = ('click', 'typing', 'tmux_orchestrator.config', 'sqlite3')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "print(','.join(loaded), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == f"tmo, version {__version__}\n"
    assert out.stderr.strip() == "", out.stderr


def test_version_after_other_options_goes_through_click() -> None:
    out = subprocess.run([sys.executable, "-m", "tmux_orchestrator", "--home", "/nonexistent", "--version"],
                         capture_output=True, text=True, check=False)
    assert (out.returncode, out.stdout) == (0, f"tmo, version {__version__}\n"), out.stderr
