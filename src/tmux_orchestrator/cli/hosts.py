"""``tmo hosts``: the hosts whose daemons share this queue."""

from __future__ import annotations

from tmux_orchestrator.cli.app import Context, cli, json_option, pass_context, print_json, print_table
from tmux_orchestrator.durations import format_duration
from tmux_orchestrator.membership import is_alive
from tmux_orchestrator.project import ProjectStatus


@cli.command()
@json_option
@pass_context
def hosts(ctx: Context, as_json: bool) -> None:
    """List the hosts of this queue: alive, last heartbeat, running projects, concurrency, labels,
    and which one delivers the events (hooks, webhooks, e-mails): the dispatcher.

    A host is alive while its daemon renews its lease (every reconcile pass); one silent for longer
    than `host_lease` (30 s) is dead, and the projects it ran are retried elsewhere.
    """
    store = ctx.existing.store
    lease = ctx.settings.host_lease
    running: dict[str, int] = {}
    for project in store.list_projects([ProjectStatus.PROCESSING]):
        running[project.host or "?"] = running.get(project.host or "?", 0) + 1
    dispatcher = store.get_setting("dispatcher")
    rows = []
    for host in store.hosts():
        alive = is_alive(host, lease)
        state = ("alive" if alive else "stopped" if host.stopped_at else "dead (lease expired)"
                 if host.expired_at else "silent")
        data = host.to_dict()
        data.update(alive=alive, state=state, running=running.get(host.name, 0),
                    dispatcher=alive and host.name == dispatcher)
        rows.append(data)
    if as_json:
        print_json(rows)
        return
    print_table(
        ["HOST", "STATE", "HEARTBEAT", "RUNNING", "CONCURRENCY", "PAUSED", "LABELS", "HOME"],
        [[r["name"] + (" *" if r["dispatcher"] else ""), r["state"],
          "" if r["silent_for"] is None else format_duration(max(0.0, r["silent_for"])) + " ago",
          r["running"], r["concurrency"], "yes" if r["paused"] else "", ",".join(r["labels"]), r["home"]]
         for r in rows],
    )
    if any(r["dispatcher"] for r in rows):
        print("* delivers the events (hooks, webhooks, e-mails)")
