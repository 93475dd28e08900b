"""The dedicated tmux server and the session manager against a real tmux server on a private socket."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tmo_helpers import all_sessions, new_owned_session, new_untagged_session, pid_alive

from tmux_orchestrator.errors import TmuxError
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.testing import retry_until
from tmux_orchestrator.tmux import KEEPER, Tmux
from tmux_orchestrator.tmux.client import Command


def _log_numbers(path: Path) -> list[int]:
    text = path.read_bytes().decode(errors="replace") if path.exists() else ""
    return [int(line) for line in text.replace("\r", "").split("\n") if line.strip().isdigit()]


def test_ensure_running_starts_server_with_keeper_once(orchestrator: Orchestrator) -> None:
    server = orchestrator.server
    assert not server.is_running()
    assert server.ensure_running() is True
    assert server.is_running()
    assert server.ensure_running() is False
    sessions = all_sessions(orchestrator)
    assert list(sessions) == [KEEPER]
    assert orchestrator.tmux.server_pid() is not None
    assert orchestrator.settings.socket_path.exists()
    # the keeper is never listed as owned
    assert server.list_owned() == []


def test_server_stays_up_when_every_project_session_is_gone(orchestrator: Orchestrator) -> None:
    orchestrator.server.ensure_running()
    new_owned_session(orchestrator, "only-one")
    orchestrator.server.kill(orchestrator.server.list_owned())
    assert orchestrator.server.is_running()
    assert list(all_sessions(orchestrator)) == [KEEPER]


def test_server_uses_its_own_socket_not_the_default(orchestrator: Orchestrator) -> None:
    argv = orchestrator.tmux.argv([["list-sessions"]])
    assert argv[argv.index("-S") + 1] == str(orchestrator.settings.socket_path)
    assert argv[argv.index("-f") + 1] == "/dev/null"


def test_start_session_creates_tagged_session(orchestrator: Orchestrator, tmp_path: Path) -> None:
    orchestrator.server.ensure_running()
    started = orchestrator.server.start_session(
        name="proj-7", project_id=7, cwd=str(tmp_path), argv=["sleep", "600"],
        log_path=orchestrator.settings.log_path(7),
    )
    assert started.session_id.startswith("$")
    assert started.window_id.startswith("@")
    [owned] = orchestrator.server.list_owned()
    assert owned.name == "proj-7"
    assert owned.session_id == started.session_id
    assert owned.window_id == started.window_id
    assert owned.pane_pid == started.pane_pid
    assert owned.project_id == 7
    assert owned.owner == orchestrator.settings.owner_tag
    tag = orchestrator.tmux.run(["show-options", "-v", "-t", "=proj-7:", "@tmo_owner"]).stdout.strip()
    assert tag == orchestrator.settings.owner_tag
    assert pid_alive(started.pane_pid)


def test_start_session_runs_in_cwd_and_passes_argv_exactly(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    work = tmp_path / "dir with space;"
    work.mkdir()
    args = ["a;", ";", "two words", "$HOME", "#{pid}", "#(touch pwned)", "'q'", "ünï"]
    orchestrator.server.ensure_running()
    orchestrator.server.start_session(
        name="argv-1", project_id=1, cwd=str(work),
        argv=["python3", "-c",
              "import json, os, sys; open('out.json', 'w').write(json.dumps([os.getcwd(), sys.argv[1:]]))",
              *args],
        log_path=orchestrator.settings.log_path(1),
    )
    out = work / "out.json"
    retry_until(out.exists, message="the command to write out.json")
    import json

    retry_until(lambda: out.read_text().endswith("]]"), message="out.json complete")
    cwd, seen = json.loads(out.read_text())
    assert cwd == str(work)
    assert seen == args
    assert not list(tmp_path.glob("**/pwned"))


def test_start_session_output_lands_completely_in_log(orchestrator: Orchestrator, tmp_path: Path) -> None:
    orchestrator.server.ensure_running()
    log_path = orchestrator.settings.log_path(3)
    orchestrator.server.start_session(
        name="seq-3", project_id=3, cwd=str(tmp_path), argv=["seq", "1", "20000"], log_path=log_path,
    )
    # the session closes by itself when seq ends; the pipe then holds every line, the first included
    retry_until(lambda: "seq-3" not in all_sessions(orchestrator), message="seq session to end")
    retry_until(lambda: _log_numbers(log_path)[-1:] == [20000], message="last line in log")
    assert _log_numbers(log_path) == list(range(1, 20001))


def test_start_session_log_appends_across_sessions(orchestrator: Orchestrator, tmp_path: Path) -> None:
    orchestrator.server.ensure_running()
    log_path = orchestrator.settings.log_path(4)
    for n, name in ((1, "app-4"), (2, "app-4-r2")):
        orchestrator.server.start_session(name=name, project_id=4, cwd=str(tmp_path),
                                          argv=["echo", f"attempt {n}"], log_path=log_path)
        retry_until(lambda name=name: name not in all_sessions(orchestrator), message=f"{name} to end")  # type: ignore[misc]
        retry_until(lambda n=n: f"attempt {n}" in log_path.read_text(), message=f"attempt {n} output")  # type: ignore[misc]
    text = log_path.read_text()
    assert text.index("attempt 1") < text.index("attempt 2")


def test_start_session_refuses_unsafe_names(orchestrator: Orchestrator, tmp_path: Path) -> None:
    orchestrator.server.ensure_running()
    for name in ["", "a.b", "a:b", "$x", "#{pid}", "#(touch f)", "has space", "x" * 101]:
        with pytest.raises(TmuxError, match="unsafe session name"):
            orchestrator.server.start_session(name=name, project_id=1, cwd=str(tmp_path), argv=["true"],
                                              log_path=tmp_path / "log")
    assert list(all_sessions(orchestrator)) == [KEEPER]
    assert not (tmp_path / "f").exists()


def test_capture_returns_scrollback(orchestrator: Orchestrator, tmp_path: Path) -> None:
    orchestrator.server.ensure_running()
    started = orchestrator.server.start_session(
        name="cap-1", project_id=1, cwd=str(tmp_path), argv=["sh", "-c", "seq 1 300; exec sleep 600"],
        log_path=orchestrator.settings.log_path(1),
    )
    retry_until(lambda: "300" in orchestrator.server.capture(started.session_id),
                message="capture to show line 300")
    text = orchestrator.server.capture(started.session_id)
    assert "1\n2\n3\n" in text
    assert orchestrator.server.capture("cap-1") == text


def test_list_owned_excludes_untagged_sessions_and_keeper(orchestrator: Orchestrator, tmp_path: Path) -> None:
    orchestrator.server.ensure_running()
    new_untagged_session(orchestrator, "foreign")
    new_owned_session(orchestrator, "mine")
    # a session tagged by another home is not ours either
    orchestrator.tmux.run(["new-session", "-d", "-s", "other-home", "sleep", "600"],
                          ["set-option", "-t", "=other-home:", "@tmo_owner", "tmo:someoneelse"])
    assert {s.name for s in orchestrator.server.list_all()} == {KEEPER, "foreign", "mine", "other-home"}
    assert [s.name for s in orchestrator.server.list_owned()] == ["mine"]
    assert orchestrator.server.find_owned("foreign") is None
    assert orchestrator.server.find_owned("other-home") is None


def test_session_manager_sees_only_owned_sessions(orchestrator: Orchestrator) -> None:
    manager = orchestrator.tmux_manager
    new_untagged_session(orchestrator, "foreign")
    new_owned_session(orchestrator, "mine", project_id=5)
    assert manager.get_active_sessions() == ["mine"]
    assert manager.is_session_alive("mine")
    assert not manager.is_session_alive("foreign")
    assert not manager.is_session_alive(KEEPER)
    assert manager.get_session_info("foreign") is None
    assert manager.get_session_info(KEEPER) is None
    info = manager.get_session_info("mine")
    assert info is not None
    assert info["name"] == "mine"
    assert info["project_id"] == 5
    assert str(info["session_id"]).startswith("$")
    assert info["attached"] is False


def test_session_manager_kills_only_owned_sessions(orchestrator: Orchestrator) -> None:
    manager = orchestrator.tmux_manager
    new_untagged_session(orchestrator, "foreign")
    new_owned_session(orchestrator, "mine")
    assert manager.kill_session("foreign") is False
    assert manager.kill_session(KEEPER) is False
    assert "foreign" in all_sessions(orchestrator)
    assert manager.kill_session("mine") is True
    assert manager.kill_session("mine") is False
    assert set(all_sessions(orchestrator)) == {KEEPER, "foreign"}


def test_kill_session_job1_never_kills_job10(orchestrator: Orchestrator) -> None:
    manager = orchestrator.tmux_manager
    new_owned_session(orchestrator, "job10")
    # no job1 at all: a prefix match would find job10
    assert manager.is_session_alive("job1") is False
    assert manager.get_session_info("job1") is None
    assert manager.kill_session("job1") is False
    assert "job10" in all_sessions(orchestrator)
    # untagged job1 next to owned job10: neither is touched
    new_untagged_session(orchestrator, "job1")
    assert manager.kill_session("job1") is False
    assert {"job1", "job10"} <= set(all_sessions(orchestrator))


def test_kill_session_job1_with_owned_job1_and_job10(orchestrator: Orchestrator) -> None:
    manager = orchestrator.tmux_manager
    new_owned_session(orchestrator, "job10")
    new_owned_session(orchestrator, "job1")
    assert manager.kill_session("job1") is True
    assert set(all_sessions(orchestrator)) == {KEEPER, "job10"}


def test_kill_session_sends_term_to_the_process_group(orchestrator: Orchestrator, tmp_path: Path) -> None:
    marker = tmp_path / "got-term"
    ready = tmp_path / "ready"
    new_owned_session(orchestrator, "trapper",
                      command=["sh", "-c", f"trap 'echo term > {marker}; exit 0' TERM; touch {ready}; "
                               "while :; do sleep 0.05; done"])
    retry_until(ready.exists, message="the trap to be installed")
    assert orchestrator.tmux_manager.kill_session("trapper") is True
    retry_until(marker.exists, message="TERM trap to run")
    assert "trapper" not in all_sessions(orchestrator)


def test_kill_sessions_by_pattern_is_exact_and_owned_only(orchestrator: Orchestrator) -> None:
    manager = orchestrator.tmux_manager
    for name in ("job1", "job10", "job11", "job2"):
        new_owned_session(orchestrator, name)
    new_untagged_session(orchestrator, "job12")
    assert manager.kill_sessions_by_pattern("job1") == ["job1"]
    assert set(all_sessions(orchestrator)) == {KEEPER, "job10", "job11", "job2", "job12"}
    assert sorted(manager.kill_sessions_by_pattern("job1*")) == ["job10", "job11"]
    assert set(all_sessions(orchestrator)) == {KEEPER, "job2", "job12"}
    assert manager.kill_sessions_by_pattern("nothing*") == []
    assert manager.kill_sessions_by_pattern("*") == ["job2"]
    assert set(all_sessions(orchestrator)) == {KEEPER, "job12"}


def test_foreign_server_session_survives_everything(orchestrator: Orchestrator, foreign_tmux: Tmux) -> None:
    manager = orchestrator.tmux_manager
    new_owned_session(orchestrator, "job1")
    new_owned_session(orchestrator, "job10")
    manager.kill_session("job1")
    manager.kill_sessions_by_pattern("*")
    orchestrator.server.kill(orchestrator.server.list_all())
    orchestrator.cleanup_lingering()
    orchestrator.server.kill_server()
    assert not orchestrator.server.is_running()
    foreign_tmux.run(["has-session", "-t", "=job1"])
    names = foreign_tmux.run(["list-sessions", "-F", "#{session_name}"]).lines
    assert names == ["job1"]


def test_server_kill_only_kills_owned_sessions_it_is_given(orchestrator: Orchestrator) -> None:
    new_untagged_session(orchestrator, "foreign")
    new_owned_session(orchestrator, "a")
    new_owned_session(orchestrator, "b")
    everything = orchestrator.server.list_all()
    killed = orchestrator.server.kill(everything)
    assert sorted(s.name for s in killed) == ["a", "b"]
    assert set(all_sessions(orchestrator)) == {KEEPER, "foreign"}


def test_kill_500_owned_sessions(
    orchestrator: Orchestrator, record_property: Callable[[str, object], None]
) -> None:
    orchestrator.server.ensure_running()
    tag = orchestrator.settings.owner_tag
    commands: list[Command] = []
    for n in range(500):
        name = f"bulk-{n}"
        commands.append(["new-session", "-d", "-s", name, "sleep", "600"])
        commands.append(["set-option", "-t", f"={name}:", "@tmo_owner", tag])
    orchestrator.tmux.run_batched(commands, check=True)
    new_untagged_session(orchestrator, "bystander")
    owned = orchestrator.server.list_owned()
    assert len(owned) == 500
    started = time.perf_counter()
    killed = orchestrator.server.kill(owned)
    elapsed = time.perf_counter() - started
    print(f"killed 500 sessions in {elapsed:.2f}s")
    record_property("kill_500_seconds", round(elapsed, 3))
    assert len(killed) == 500
    assert orchestrator.server.list_owned() == []
    assert set(all_sessions(orchestrator)) == {KEEPER, "bystander"}
    retry_until(lambda: not any(pid_alive(s.pane_pid) for s in owned if s.pane_pid),
                message="the 500 sleeps to end")
