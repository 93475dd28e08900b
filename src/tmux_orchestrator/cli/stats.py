"""``tmo stats``: the queue's summary from the database alone (no daemon or metrics server needed)."""

from __future__ import annotations

import click

from tmux_orchestrator.cli.app import Context, cli, json_option, pass_context, print_json
from tmux_orchestrator.stats import Latency, compute_stats


def _latency(value: Latency) -> str:
    if not value.samples:
        return "no samples yet"
    assert value.median is not None and value.p99 is not None
    return f"median {value.median * 1000:.1f} ms, p99 {value.p99 * 1000:.1f} ms ({value.samples} samples)"


@cli.command()
@click.option("--events", "last_events", type=click.IntRange(min=1), default=10000, show_default=True,
              help="How many of the newest events the summary covers.")
@json_option
@pass_context
def stats(ctx: Context, last_events: int, as_json: bool) -> None:
    """Summarize the queue: projects by status, starts, ends by outcome, hand-off and end-detection
    latency (median and p99), cleaned sessions and delivery failures. The daemon's `--metrics`
    endpoint serves the same numbers to Prometheus."""
    summary = compute_stats(ctx.existing.store, last_events=last_events)
    if as_json:
        print_json(summary.to_dict())
        return
    click.echo("projects:       " + ", ".join(f"{n} {s}" for s, n in summary.projects.items()))
    click.echo(f"events:         {summary.events}" + (f" since {summary.since}" if summary.since else ""))
    click.echo(f"starts:         {summary.starts}")
    click.echo("ends:           " + (", ".join(f"{n} {k}" for k, n in summary.ends.items()) or "none"))
    click.echo(f"hand-off:       {_latency(summary.handoff)}")
    click.echo(f"end detection:  {_latency(summary.end_detection)}")
    for via, latency in summary.end_detection_by_via.items():
        click.echo(f"  via {via + ':':11}{_latency(latency)}")
    click.echo(f"lingering sessions cleaned: {summary.lingering_cleaned}")
    click.echo("delivery failures: " + ", ".join(
        f"{n} {k}" for k, n in summary.delivery_failures.items()))
