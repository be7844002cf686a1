"""How the console draws runs (rich): the `list` table, the `get` header and tree, the live
`watch` screen and its one-line-per-change form for logs. Takes runs.py's plain data."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from batchpredict.console.runs import (
    DONE,
    FAILED,
    RUNNING,
    WAITING,
    RoundNode,
    RunDetail,
    RunRow,
)
from batchpredict.io.results import field_text
from batchpredict.reconcile.progress import format_duration

PHASE_STYLE = {
    "Succeeded": "green",
    "PartiallySucceeded": "yellow",
    "Failed": "red",
    "Cancelled": "red",
    "Running": "cyan",
    "Retrying": "magenta",
    "Suspended": "bright_black",
    "Queued": "bright_black",
    "Pending": "bright_black",
}
GLYPH = {DONE: ("✔", "green"), FAILED: ("✘", "red"), RUNNING: ("▶", "cyan")}
GLYPH[WAITING] = ("…", "yellow")
BAR_WIDTH = 20


def show(console: Console, renderable: RenderableType) -> None:
    """Print `renderable`; in a pipe without the padding rich leaves at the ends of lines."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    lines = captured.get().splitlines()
    console.out("\n".join(line.rstrip() for line in lines), highlight=False)


def phase_text(phase: str) -> Text:
    return Text(phase, style=PHASE_STYLE.get(phase, ""))


def clock(value: datetime | None) -> str:
    """A time as the user's local clock (date too when not today)."""
    if value is None:
        return ""
    local = value.astimezone()
    if local.date() == datetime.now(UTC).astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


def bar(fraction: float, width: int = BAR_WIDTH) -> ProgressBar:
    return ProgressBar(total=1.0, completed=fraction, width=width)


def counts(row: RunRow) -> str:
    total = "?" if row.total is None else f"{row.total:,}"
    return f"{row.done:,}/{total}"


def run_table(rows: Sequence[RunRow], *, wide: bool, headers: bool, namespaces: bool) -> Table:
    """The seed's run table: name, model and dataset, who, a progress bar, times, status."""
    table = Table(box=None, show_header=headers, pad_edge=False, header_style="bold")
    if namespaces:
        table.add_column("NAMESPACE")
    table.add_column("NAME", no_wrap=True)
    table.add_column("MODEL")
    if wide:
        table.add_column("DATASET")
    table.add_column("STARTED BY")
    table.add_column("PROGRESS", no_wrap=True)
    table.add_column("ITEMS", justify="right")
    table.add_column("FAILED", justify="right")
    table.add_column("START")
    table.add_column("END")
    table.add_column("DURATION", justify="right")
    if wide:
        table.add_column("ITEMS/S", justify="right")
        table.add_column("ETA", justify="right")
        table.add_column("ROUND", justify="right")
    table.add_column("STATUS")
    for row in rows:
        duration = row.duration()
        cells: list[RenderableType] = []
        if namespaces:
            cells.append(row.namespace)
        cells += [row.name, row.model]
        if wide:
            cells.append(row.dataset)
        cells += [
            row.started_by,
            Group(bar(row.fraction, 12)) if row.total is not None else Text(""),
            counts(row),
            f"{row.failed:,}" if row.failed else "",
            clock(row.start),
            clock(row.end),
            format_duration(duration) if duration is not None else "",
        ]
        if wide:
            speed = f"{row.items_per_second:g}" if row.items_per_second else ""
            cells += [speed, row.eta or "", str(row.round)]
        cells.append(phase_text(row.phase))
        table.add_row(*cells)
    return table


def run_names(rows: Iterable[RunRow]) -> str:
    return "".join(f"batchprediction.batchpredict.io/{r.name}\n" for r in rows)


def header(detail: RunDetail) -> Table:
    """`get`'s header block: one field per line."""
    row = detail.row
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    duration = row.duration()
    percent = f"{row.fraction:.0%}" if row.total is not None else ""
    lines: list[tuple[str, RenderableType]] = [
        ("Name", f"{row.name} (namespace {row.namespace})"),
        ("Status", Text.assemble(phase_text(row.phase), f"  {row.message}" if row.message else "")),
        ("Model", row.model),
        ("Dataset", row.dataset),
        ("Output", detail.output),
        ("Started by", row.started_by),
        ("Started", clock(row.start)),
        ("Ended", clock(row.end)),
        ("Duration", format_duration(duration) if duration is not None else ""),
        (
            "Items",
            f"{counts(row)} done ({percent}): {row.succeeded:,} succeeded, "
            f"{row.failed:,} failed" + (f", {row.retrying:,} retrying" if row.retrying else ""),
        ),
        ("Round", str(row.round)),
    ]
    if row.items_per_second:
        lines.append(("Items/s", f"{row.items_per_second:g}"))
    if row.eta and not row.finished:
        lines.append(("ETA", row.eta))
    for name, value in lines:
        if value != "":
            grid.add_row(name, value)
    return grid


def glyph(state: str) -> Text:
    mark, style = GLYPH.get(state, ("○", "bright_black"))
    return Text(mark, style=style)


def round_tree(detail: RunDetail) -> Tree:
    tree = Tree(Text("Rounds", style="bold"))
    for node in detail.rounds:
        tree.add(_round_branch(node))
    return tree


def _round_branch(node: RoundNode) -> Tree:
    total = "?" if node.total is None else f"{node.total:,}"
    kind = "manual retry" if node.manual else ("first pass" if node.round == 0 else "retry")
    label = Text.assemble(
        glyph(node.state),
        f" round {node.round} ({kind})  {node.done:,}/{total} items  ",
        (node.job, "bright_black"),
    )
    branch = Tree(label)
    for shard in node.shards:
        items = f"{shard.done:,}/{shard.total:,}" if shard.total is not None else "-"
        parts: list[Any] = [glyph(shard.state), f" shard {shard.shard}  {items} items"]
        if shard.failed:
            parts.append((f"  {shard.failed} failed", "red"))
        if shard.items_per_second:
            parts.append(f"  {shard.items_per_second:g} items/s")
        if shard.pod:
            parts.append((f"  {shard.pod}", "bright_black"))
        if shard.message and shard.state != DONE:
            parts.append((f"  {shard.message}", "yellow"))
        branch.add(Text.assemble(*parts))
    return branch


def failure_table(summary: Sequence[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    table.add_column("CODE")
    table.add_column("COUNT", justify="right")
    table.add_column("RETRYABLE")
    for entry in summary:
        table.add_row(
            Text(str(entry.get("code")), style="red"),
            f"{int(entry.get('count', 0)):,}",
            "yes" if entry.get("retryable") else "no",
        )
    return table


def detail_view(detail: RunDetail) -> Group:
    parts: list[RenderableType] = [header(detail)]
    if detail.rounds:
        parts += [Text(""), round_tree(detail)]
    if detail.failure_summary:
        parts += [
            Text(""),
            Text("Failures by code", style="bold"),
            failure_table(detail.failure_summary),
        ]
    if detail.evaluation:
        parts += [Text(""), Text("Evaluation", style="bold"), evaluation_table(detail.evaluation)]
    return Group(*parts)


def evaluation_table(evaluation: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in evaluation.items():
        grid.add_row(str(key), field_text(value))
    return grid


def rows_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Table:
    """Prediction or failure rows as a table (columns: the first row's, in order)."""
    names = list(columns or (rows[0].keys() if rows else []))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in names:
        table.add_column(name.upper())
    for row in rows:
        table.add_row(*(field_text(row[n]) if n in row else "" for n in names))
    return table


# --- watch -----------------------------------------------------------------------------------
def watch_view(detail: RunDetail, new_failures: Sequence[dict[str, Any]]) -> Group:
    """The live screen: overall bar with items a/b, %, items/s, ETA, elapsed; a bar per active
    shard; the latest failures."""
    row = detail.row
    elapsed = row.duration()
    speed = f"{row.items_per_second:g} items/s" if row.items_per_second else ""
    overall = Table.grid(padding=(0, 1))
    for _ in range(7):
        overall.add_column()
    overall.add_row(
        Text(row.name, style="bold"),
        phase_text(row.phase),
        bar(row.fraction, 40),
        f"{counts(row)} items",
        f"{row.fraction:.0%}",
        speed,
        f"ETA {row.eta}  elapsed {format_duration(elapsed or 0)}"
        if row.eta and not row.finished
        else f"elapsed {format_duration(elapsed or 0)}",
    )
    parts: list[RenderableType] = [overall]
    active = [
        (node, shard)
        for node in detail.rounds[-1:]
        for shard in node.shards
        if shard.state in {RUNNING, WAITING}
    ]
    if active:
        shards = Table.grid(padding=(0, 1))
        for _ in range(4):
            shards.add_column()
        for node, shard in active:
            fraction = shard.done / shard.total if shard.total else 0.0
            shards.add_row(
                f"  r{node.round} shard {shard.shard}",
                bar(fraction, 30),
                f"{shard.done:,}/{shard.total or 0:,}",
                f"{shard.items_per_second:g} items/s" if shard.items_per_second else shard.message,
            )
        parts.append(shards)
    if row.failed or new_failures:
        parts.append(Text(f"failed: {row.failed:,}", style="red"))
        parts += [
            Text(f"  {failure.get('id')}  {failure.get('code')}: {failure.get('message')}")
            for failure in new_failures[-5:]
        ]
    return Group(*parts)


def watch_line(row: RunRow, now: datetime) -> str:
    """One line per change, for logs: time, phase, items, %, speed, ETA."""
    parts = [
        now.astimezone().strftime("%H:%M:%S"),
        row.name,
        row.phase,
        f"{counts(row)} items",
        f"{row.fraction:.0%}",
        f"failed {row.failed:,}",
    ]
    if row.round:
        parts.append(f"round {row.round}")
    if row.items_per_second and not row.finished:
        parts.append(f"{row.items_per_second:g} items/s")
    if row.eta and not row.finished:
        parts.append(f"ETA {row.eta}")
    return "  ".join(parts)
