"""Issue 13, defect 4: ``tmo daemon install-systemd`` writes one user unit per home, where the XDG
spec says, never over an existing one unasked, carrying the database URL (never its password) and
the user's PATH. Every run has ``HOME`` and ``XDG_CONFIG_HOME`` in the test's tmp dir: the real
user's configuration is never written, and no test writes a system unit (only ``--print`` one)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from acceptance.support import TMO, tmo_environment

#: What the XDG Base Directory spec says the environment holds; the tests set or unset them.
_XDG = ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR")


class User:
    """A user whose home, config directory and working directory are in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "user"
        self.cwd = tmp / "cwd"
        self.config = tmp / "config"
        for path in (self.home, self.cwd):
            path.mkdir()
        env = tmo_environment(tmp / "tmo-home")
        self.env = {k: v for k, v in env.items() if k not in _XDG}
        self.env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.config))

    def tmo(self, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
        merged = {**self.env, **env}
        return subprocess.run([TMO, *args], capture_output=True, text=True, timeout=60, check=False,
                              cwd=self.cwd, stdin=subprocess.DEVNULL,
                              env={k: v for k, v in merged.items() if v is not None})

    def install(self, *args: str, before: tuple[str, ...] = (), **env: str | None) -> Path:
        """``tmo [before] daemon install-systemd [args]``, which must succeed; returns the file it
        wrote."""
        result = self.tmo(*before, "daemon", "install-systemd", *args, **env)
        assert result.returncode == 0, result
        match = re.match(r"wrote (\S+)\n", result.stdout)
        assert match, result.stdout
        path = Path(match.group(1))
        assert path.is_absolute() and path.is_file(), path
        assert f"enable --now {path.stem}" in result.stdout, result.stdout
        return path


@pytest.fixture
def user(tmp_path: Path) -> User:
    """The user; refuses to go on if the unit would be a system unit (run as root, a tmo that
    writes one unasked would write to /etc/systemd/system)."""
    made = User(tmp_path)
    printed = made.tmo("daemon", "install-systemd", "--print").stdout
    assert "WantedBy=default.target" in printed, f"not a user unit by default:\n{printed}"
    return made


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as ``{section: [(key, value), ...]}`` (keys may repeat, as ``Environment=``)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key, value))
    return sections


def unit_environment(text: str) -> dict[str, str]:
    """The variables the unit's ``Environment=`` lines set (systemd's quoting and ``%%``)."""
    env: dict[str, str] = {}
    for key, value in parse_unit(text)["Service"]:
        if key == "Environment":
            for word in shlex.split(value):
                name, _, val = word.replace("%%", "%").partition("=")
                env[name] = val
    return env


def test_a_user_unit_is_the_default_even_for_root(user: User) -> None:
    printed = user.tmo("daemon", "install-systemd", "--print")
    assert printed.returncode == 0, printed
    # Checked first: without it, an old tmo run as root would write to /etc/systemd/system.
    assert ("WantedBy", "default.target") in parse_unit(printed.stdout)["Install"], printed.stdout
    path = user.install()
    assert path.parent == user.config / "systemd" / "user"
    assert path.read_text() == printed.stdout


def test_a_system_unit_only_when_asked(user: User) -> None:
    printed = user.tmo("daemon", "install-systemd", "--system", "--print")
    assert printed.returncode == 0, printed
    assert ("WantedBy", "multi-user.target") in parse_unit(printed.stdout)["Install"]


@pytest.mark.parametrize("xdg", ["", "relative/config"], ids=["empty", "relative"])
def test_an_empty_or_relative_xdg_config_home_is_ignored(user: User, xdg: str) -> None:
    path = user.install(XDG_CONFIG_HOME=xdg)
    assert path.parent == user.home / ".config" / "systemd" / "user"
    assert list(user.cwd.iterdir()) == [], "nothing may be written relative to the working directory"


def test_two_homes_get_two_units(user: User, tmp_path: Path) -> None:
    first = user.install(TMO_HOME=str(tmp_path / "work"))
    first_text = first.read_text()
    second = user.install(TMO_HOME=str(tmp_path / "play"))
    assert first != second and first.parent == second.parent
    assert first.read_text() == first_text, "the second home's unit replaced the first one's"
    assert unit_environment(first_text)["TMO_HOME"] == str(tmp_path / "work")
    assert unit_environment(second.read_text())["TMO_HOME"] == str(tmp_path / "play")
    assert re.fullmatch(r"tmux-orchestrator-work-[0-9a-f]{12}\.service", first.name), first.name


def test_the_default_home_keeps_the_plain_name(user: User) -> None:
    path = user.install(TMO_HOME=None)
    assert path.name == "tmux-orchestrator.service"
    home = user.home / ".local" / "state" / "tmux-orchestrator"
    assert unit_environment(path.read_text())["TMO_HOME"] == str(home)


def test_an_existing_unit_is_replaced_only_with_force(user: User) -> None:
    path = user.install()
    new = path.read_text()
    assert user.install().read_text() == new  # the same unit again: nothing to replace
    path.write_text(new + "# edited by hand\n")
    refused = user.tmo("daemon", "install-systemd")
    assert refused.returncode == 1, refused
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmo: error: "), refused.stderr
    assert str(path) in lines[0] and "--force" in lines[0], lines[0]
    assert path.read_text() == new + "# edited by hand\n"
    assert user.install("--force").read_text() == new


@pytest.mark.parametrize("how", ["env", "flag"])
def test_the_unit_carries_the_database_url_and_path(user: User, tmp_path: Path, how: str) -> None:
    # Spaces, quotes and % (systemd expands %h) survive systemd's quoting.
    home = tmp_path / 'the "%h" home'
    url = f"sqlite:///{tmp_path}/queue 100%.db"
    path_var = f"/opt/my tools/bin:{Path(TMO).parent}:/usr/bin"
    if how == "env":
        unit_file = user.install(TMO_HOME=str(home), TMO_DATABASE_URL=url, PATH=path_var)
    else:
        unit_file = user.install(before=("--database-url", url), TMO_HOME=str(home), PATH=path_var)
    unit = unit_file.read_text()
    env = unit_environment(unit)
    assert (env["TMO_HOME"], env["TMO_DATABASE_URL"], env["PATH"]) == (str(home), url, path_var)
    assert "%h" not in unit.replace("%%", "")
    analyze = shutil.which("systemd-analyze")
    if analyze:  # systemd's own parser, where it is installed: no warning about the file
        checked = subprocess.run([analyze, "verify", str(unit_file)], capture_output=True, text=True,
                                 timeout=60, check=False)
        assert unit_file.name not in checked.stdout + checked.stderr, checked


def test_the_default_database_is_not_pinned(user: User) -> None:
    assert "TMO_DATABASE_URL" not in unit_environment(user.install().read_text())


@pytest.mark.parametrize("url", [
    "postgresql://tmo:s3cret-pw@db.example/queue",
    "postgresql://tmo@db.example/queue?password=s3cret-pw",
])
def test_a_password_in_the_database_url_is_refused(user: User, url: str) -> None:
    result = user.tmo("daemon", "install-systemd", TMO_DATABASE_URL=url)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmo: error: "), result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "postgresql://tmo@db.example/queue" in lines[0] and ".pgpass" in lines[0], lines[0]
    assert not (user.config / "systemd").exists(), "nothing may be written"
