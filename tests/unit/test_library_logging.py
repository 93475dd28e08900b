"""The library configures no logging and prints nothing; the CLI shows the library's warnings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tmux_orchestrator

_LIBRARY = """
import logging
import tmux_orchestrator
from tmux_orchestrator import Orchestrator  # the API's modules, as a program using it loads them
logging.getLogger("tmux_orchestrator.daemon").warning("a warning of the library")
logging.getLogger("tmux_orchestrator").error("an error of the library")
assert logging.getLogger().handlers == [], logging.getLogger().handlers
print("done")
"""

_CLI = """
import logging
from tmux_orchestrator.cli.entry import configure_logging
configure_logging()
logging.getLogger("tmux_orchestrator.cleanup").warning("cannot kill %s", "build-1")
logging.getLogger("tmux_orchestrator.cleanup").info("not shown")
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)


def test_importing_and_using_the_library_prints_nothing_and_configures_nothing() -> None:
    result = _python(_LIBRARY)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert result.stderr == "", "the library printed through logging's last-resort handler"


def test_the_cli_prints_the_librarys_warnings_as_one_line_each() -> None:
    result = _python(_CLI)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "tmo: warning: cannot kill build-1\n"


def test_every_module_that_logs_brings_the_null_handler_with_it() -> None:
    """The NullHandler is added where logging is first imported (home.py), not in the package's
    __init__ (which `tmo --version` loads alone): each module that logs must import it too."""
    package = Path(tmux_orchestrator.__file__).parent
    modules = sorted(
        "tmux_orchestrator." + ".".join(path.relative_to(package).with_suffix("").parts)
        for path in package.rglob("*.py") if "logging.getLogger(" in path.read_text()
    )
    assert len(modules) > 10, modules
    check = ("import importlib, logging, sys; importlib.import_module(sys.argv[1]); "
             "handlers = logging.getLogger('tmux_orchestrator').handlers; "
             "sys.exit(0 if any(isinstance(h, logging.NullHandler) for h in handlers) else 3)")
    procs = {m: subprocess.Popen([sys.executable, "-c", check, m]) for m in modules}
    missing = [m for m, proc in procs.items() if proc.wait(timeout=60) != 0]
    assert not missing, f"these modules log without the package's NullHandler: {missing}"
