"""Commands users expect (issue 13, 7): `tmo logs --plain/--lines`, `tmo server stop`, idempotent
`daemon start/stop`, "no daemon" and "paused" said by `add` and `list`, `daemon start` taking
`daemon run`'s options, and the shell completion the README documents."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

from acceptance.hosts import Cluster
from acceptance.support import TMO, DaemonControl, Tmo, add_gated, pid_alive, poll, wait_session

README = Path(__file__).resolve().parents[2] / "README.md"


def _no_escapes(text: str) -> None:
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text, repr(text)


# -- tmo logs --plain / --lines ---------------------------------------------------------------------
_TUI = (r"printf '\033[1;31mred\033[0m text\n\033]0;a title\007\033(B'; "
        r"for p in 10 50 100; do printf '\r\033[Kprogress %s%%' $p; done; printf '\n'; "
        r"printf 'typo\b\bpo\n'")


def test_logs_plain_removes_terminal_escapes_and_resolves_overwrites(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project_id = tmo.add("sh", "-c", _TUI)
    daemon.start()
    tmo.wait_status(project_id, "completed")
    raw = tmo.ok("logs", str(project_id))
    assert "\x1b[1;31m" in raw, "the log itself stays the raw terminal output"
    plain = tmo.ok("logs", str(project_id), "--plain")
    _no_escapes(plain)
    assert plain.splitlines()[-3:] == ["red text", "progress 100%", "typo"], plain


def test_logs_lines_prints_the_last_lines_like_tail(tmo: Tmo, daemon: DaemonControl) -> None:
    project_id = tmo.add("seq", "1", "5000")
    daemon.start()
    tmo.wait_status(project_id, "completed")
    assert tmo.ok("logs", str(project_id), "--lines", "3", "--plain") == "4998\n4999\n5000\n"
    raw = tmo.ok("logs", str(project_id), "-n", "2")
    assert raw.splitlines() == ["4999", "5000"], repr(raw)
    assert tmo.ok("logs", str(project_id), "-n", "0") == ""


def test_logs_plain_follow_streams_plain_lines_until_the_project_ends(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    work = tmo.home / "work"
    work.mkdir()
    script = (r"printf '\033[32mfirst\033[0m\n'; while [ ! -e gate ]; do sleep 0.05; done; "
              r"printf '\033]0;t\007\033[1msecond\033[0m\n'")
    project_id = tmo.add("sh", "-c", script, options=["--dir", str(work)])
    daemon.start()
    follower = tmo.popen("logs", str(project_id), "--follow", "--plain", "--lines", "5")
    wait_session(tmo, project_id)
    (work / "gate").touch()
    out, err = follower.communicate(timeout=15)
    assert follower.returncode == 0, err
    _no_escapes(out)
    assert out.splitlines()[-2:] == ["first", "second"], repr(out)


# -- tmo server stop --------------------------------------------------------------------------------
def test_server_stop_ends_this_homes_tmux_server_after_daemon_stop(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    tmo.ok("daemon", "stop")
    server = tmo.server_pid()
    assert server is not None, "the private tmux server lives on after `daemon stop`"
    out = tmo.ok("server", "stop")
    assert f"pid {server}" in out, out
    assert not pid_alive(server), "`tmo server stop` returned before the server ended"
    again = tmo("server", "stop")
    assert again.returncode == 0, again.stderr
    assert "not running" in again.stdout, again.stdout


def test_server_stop_in_a_home_never_used_says_no_server_runs(tmo: Tmo) -> None:
    result = tmo("server", "stop")  # as `tmo daemon stop` there: exit 0, and nothing created
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "not running" in result.stdout
    assert not (tmo.home / "tmo.db").exists()


def test_server_stop_refuses_while_the_daemon_runs(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    server = tmo.server_pid()
    assert server is not None
    result = tmo("server", "stop")
    assert result.returncode == 1, result
    assert result.stderr.startswith("tmo: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "tmo daemon stop" in result.stderr
    assert pid_alive(server)


def test_server_stop_refuses_while_projects_run_on_it_unless_forced(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project_id, _gate = add_gated(tmo, "running")
    daemon.start()
    session = wait_session(tmo, project_id)
    tmo.ok("daemon", "stop")
    server = tmo.server_pid()
    assert server is not None

    refused = tmo("server", "stop")
    assert refused.returncode == 1, refused
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert f"project {project_id}" in refused.stderr or f"project(s) {project_id}" in refused.stderr
    assert f"tmo cancel {project_id}" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert session in tmo.tmux_session_names()

    tmo.ok("server", "stop", "--force")
    assert not pid_alive(server)
    daemon.start()  # the next daemon finds the project's session gone: lost, not left running
    ended = tmo.wait_status(project_id, "failed")
    assert ended["outcome"] == "lost"


def test_server_stop_never_ends_a_server_this_home_did_not_start(tmo: Tmo) -> None:
    tmo.add("true")  # the database exists; no daemon ever ran
    started = tmo.tmux("new-session", "-d", "-s", "users-own", "sleep", "600")
    assert started.returncode == 0, started.stderr
    server = tmo.server_pid()
    assert server is not None
    result = tmo("server", "stop", "--force")
    assert result.returncode != 0
    assert "refusing tmux server" in result.stderr, result.stderr
    assert pid_alive(server)
    assert "users-own" in tmo.tmux_session_names()


# -- idempotent daemon start / stop -----------------------------------------------------------------
def test_daemon_start_and_stop_exit_0_when_already_in_that_state(tmo: Tmo, daemon: DaemonControl) -> None:
    pid = daemon.start()
    again = tmo("daemon", "start")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"daemon already running (pid {pid})", again.stdout
    assert daemon.pid() == pid
    tmo.ok("daemon", "stop")
    stopped = tmo("daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.count("\n") == 1 and "not running" in stopped.stdout, stopped.stdout


def test_daemon_start_on_a_running_daemon_says_its_options_were_not_applied(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    pid = daemon.start("--concurrency", "1")
    again = tmo("daemon", "start", "--concurrency", "3")
    assert again.returncode == 0, again.stderr
    assert f"already running (pid {pid})" in again.stdout
    assert "tmo daemon stop" in again.stdout, again.stdout
    assert daemon.status()["concurrency"] == 1


# -- "no daemon" and "paused" -------------------------------------------------------------------
def test_add_without_a_daemon_says_so_on_stderr_and_prints_only_the_id(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    result = tmo("add", "--", "true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit() and result.stdout.count("\n") == 1, result.stdout
    assert result.stderr.count("\n") == 1, result.stderr
    assert "no daemon" in result.stderr and "tmo daemon start" in result.stderr, result.stderr
    as_json = tmo("add", "--json", "--", "true")
    assert json.loads(as_json.stdout)["status"] == "queued"
    assert "no daemon" in as_json.stderr
    daemon.start()
    quiet = tmo("add", "--", "true")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_add_on_a_shared_database_counts_any_live_host_as_a_daemon(cluster: Cluster) -> None:
    worker, client = cluster.host("worker"), cluster.host("client")
    worker.daemon.start()
    served = client.tmo("add", "--", "true")
    assert served.returncode == 0 and served.stderr == "", served.stderr
    worker.tmo.ok("daemon", "stop")
    unserved = client.tmo("add", "--", "true")
    assert "no daemon" in unserved.stderr, unserved.stderr


def test_list_says_when_no_daemon_runs_or_the_queue_is_paused(tmo: Tmo, daemon: DaemonControl) -> None:
    tmo.add("true")
    alone = tmo("list")
    assert alone.returncode == 0 and "no daemon" in alone.stderr, alone.stderr
    assert alone.stdout.startswith("ID"), "the table itself is unchanged"
    daemon.start()
    tmo.ok("pause")
    paused = tmo("list")
    assert "paused" in paused.stderr and "tmo resume" in paused.stderr, paused.stderr
    assert "no daemon" not in paused.stderr
    as_json = tmo("list", "--json")
    assert isinstance(json.loads(as_json.stdout), list)
    assert as_json.stderr == "", "--json says it nowhere"
    tmo.ok("resume")
    assert tmo("list").stderr == ""


# -- daemon start takes daemon run's options --------------------------------------------------------
def _options(help_text: str) -> set[str]:
    return set(re.findall(r"^\s+(?:-\w, )?(--[\w-]+)", help_text, re.MULTILINE))


def test_daemon_start_takes_the_options_of_daemon_run(tmo: Tmo) -> None:
    run = _options(tmo.ok("daemon", "run", "--help"))
    start = _options(tmo.ok("daemon", "start", "--help"))
    # --quiet is what start always does (its daemon logs to scheduler.log only)
    assert run - {"--quiet"} <= start, f"missing from `daemon start`: {run - {'--quiet'} - start}"


def test_daemon_start_passes_metrics_json_logs_and_log_level_on(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start("--metrics", "127.0.0.1:0", "--log-json", "--log-level", "DEBUG")
    assert str(daemon.status()["metrics_url"]).startswith("http://127.0.0.1:")
    records = [json.loads(line) for line in (tmo.home / "scheduler.log").read_text().splitlines()]
    assert any(r["level"] == "debug" for r in records), records[:5]


# -- shell completion ---------------------------------------------------------------------------------
def _complete(tmo: Tmo, **env: str) -> subprocess.CompletedProcess[str]:
    """``tmo`` run as a shell's completion runs it: no arguments, the request in the environment."""
    return subprocess.run([TMO], capture_output=True, text=True, timeout=30, check=False,
                          env={**tmo.env, **env}, stdin=subprocess.DEVNULL)


def test_the_completion_the_readme_documents_works(tmo: Tmo) -> None:
    readme = README.read_text()
    documented = set(re.findall(r"_TMO_COMPLETE=(\w+_source) tmo", readme))
    assert documented >= {"bash_source", "zsh_source", "fish_source"}, documented
    for mode in sorted(documented):
        script = _complete(tmo, _TMO_COMPLETE=mode)
        assert script.returncode == 0 and "_TMO_COMPLETE" in script.stdout, (mode, script.stderr)
    # the bash line as documented, then what bash does on `tmo da<TAB>`
    line = re.search(r'^eval "\$\(_TMO_COMPLETE=bash_source tmo\)"', readme, re.MULTILINE)
    assert line is not None, "the README shows no bash line"
    tab = 'COMP_WORDS=(tmo da); COMP_CWORD=1; _tmo_completion tmo; echo "${COMPREPLY[@]}"'
    answer = subprocess.run(["bash", "-c", f"{line.group()}; {tab}"], capture_output=True, text=True,
                            timeout=30, check=False, env=tmo.env, stdin=subprocess.DEVNULL)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.split() == ["daemon"], answer


def _log_writer(log: Path) -> int | None:
    """The pid of the ``cat`` tmux pipes the pane into ``log`` with."""
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and (entry / "comm").read_text().strip() == "cat"
                    and os.readlink(entry / "fd" / "1") == str(log)):
                return int(entry.name)
        except OSError:
            continue
    return None


def test_logs_right_after_the_end_prints_the_whole_output(tmo: Tmo, daemon: DaemonControl) -> None:
    # The end is recorded once the session is gone, while up to a pipe's worth of the last output
    # may still be on its way to the log (its writer was slow: a busy machine). `tmo logs` waits
    # for the writer to finish (it leaves a marker), so a script that reads the log of a project
    # it saw end gets all of it.
    work = tmo.home / "work"
    work.mkdir()
    project_id = tmo.add("sh", "-c", "while [ ! -e gate ]; do sleep 0.05; done; seq 1 5000",
                         options=["--dir", str(work)])
    daemon.start()
    wait_session(tmo, project_id)
    writer = poll(lambda: _log_writer(tmo.home / "logs" / f"{project_id}.log"), timeout=10)
    os.kill(writer, signal.SIGSTOP)  # 24 KB: fits in the pipe, so the session still ends
    try:
        (work / "gate").touch()
        tmo.wait_status(project_id, "completed", timeout=30)
        threading.Timer(1.0, os.kill, (writer, signal.SIGCONT)).start()
        printed = tmo.ok("logs", str(project_id), "-n", "1")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(writer, signal.SIGCONT)
    assert printed.replace("\r", "") == "5000\n", repr(printed[-40:])
