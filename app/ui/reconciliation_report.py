"""The reconciliation report as a PDF: a title, the run it reports, counts and amounts per
status and per source, then the exceptions, as a bursar would file it.

The document is laid out and printed on a QThread of its own: a long list takes a moment to
lay out, and the window must not wait for it. (Not a plain Python thread: QTextDocument's
layout starts timers, which need the event dispatcher a QThread has.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMarginsF, QThread
from PySide6.QtGui import QFont, QPageLayout, QPageSize, QPdfWriter, QTextDocument

from app.domain.reconciliation import Status
from app.services.reconciliation.service import Line, RunSummary
from app.ui.reconciliation_table import (
    KIND_LABELS,
    STATUS_COLOURS,
    STATUS_EXPLAINED,
    LineWords,
    amounts_text,
    source_name,
    status_label,
)

PDF_ROWS = 1_000  # exceptions listed in the PDF; the CSV export has every record
TRIGGERS = {"manual": "by hand", "scheduled": "on its daily schedule", "command": "from a command"}


def _when(moment: datetime | None, words: LineWords) -> str:
    if moment is None:
        return "—"
    return f"{moment.astimezone(words.zone):%d %b %Y %H:%M}"


def run_sentence(summary: RunSummary, words: LineWords) -> str:
    """Which run, when, and what it read, in one sentence."""
    how = TRIGGERS.get(summary.trigger, summary.trigger)
    inputs = summary.inputs
    read = (
        f"{inputs.get('ledger', 0):,} in our records, {inputs.get('gateway', 0):,} from "
        f"gateways, {inputs.get('payouts', 0):,} payouts and {inputs.get('bank', 0):,} bank lines"
    )
    return (
        f"Run {summary.id}, started {how} on {_when(summary.started_at, words)}, as of "
        f"{_when(summary.as_of, words)}. It read {read}."
    )


def report_html(
    summary: RunSummary,
    exceptions: Sequence[Line],
    words: LineWords,
    school: str,
    *,
    limit: int = PDF_ROWS,
) -> str:
    statuses: dict[str, Any] = summary.counts.get("statuses", {})
    sources: dict[str, dict[str, int]] = summary.counts.get("sources", {})
    records = int(summary.counts.get("records", 0))
    parts = [
        "<html><body>",
        f"<h1>Reconciliation report</h1><p><b>{escape(school)}</b></p>",
        f"<p>{escape(run_sentence(summary, words))}</p>",
    ]
    if exceptions:
        first = min(line.at for line in exceptions)
        last = max(line.at for line in exceptions)
        parts.append(
            f"<p>{records:,} records in all; {summary.exceptions:,} to look at, dated "
            f"{words.day_of(first)} to {words.day_of(last)}.</p>"
        )
    else:
        parts.append(f"<p>{records:,} records in all; nothing to look at.</p>")

    parts.append("<h2>By status</h2>")
    parts.append(_table(["Status", "Records", "Amounts", "What it means"], [2, 1, 3, 5]))
    for status in Status:
        figures = statuses.get(status.value)
        if not figures or not figures.get("n"):
            continue
        colour = STATUS_COLOURS.get(status.value, "#000000")
        parts.append(
            "<tr>"
            f"<td><font color='{colour}'>{escape(status_label(status.value))}</font></td>"
            f"<td align='right'>{int(figures['n']):,}</td>"
            f"<td align='right'>{escape(amounts_text(figures.get('amounts', {}), words.locale))}"
            "</td>"
            f"<td>{escape(STATUS_EXPLAINED.get(status.value, ''))}</td>"
            "</tr>"
        )
    parts.append("</table>")

    if sources:
        parts.append("<h2>By gateway and bank</h2>")
        headings = ["Where", "Matched", "Not due yet", "To look at", "Written off"]
        parts.append(_table(headings, [3, 1, 1, 1, 1]))
        for source, counts in sorted(
            sources.items(), key=lambda item: source_name(item[0], words.names)
        ):
            looked = sum(n for status, n in counts.items() if Status(status).is_exception)
            cells = [
                counts.get(Status.MATCHED.value, 0),
                counts.get(Status.EXPECTED.value, 0),
                looked,
                counts.get(Status.RESOLVED.value, 0),
            ]
            parts.append(
                f"<tr><td>{escape(source_name(source, words.names))}</td>"
                + "".join(f"<td align='right'>{n:,}</td>" for n in cells)
                + "</tr>"
            )
        parts.append("</table>")

    parts.append("<h2>To look at</h2>")
    if not exceptions:
        parts.append("<p>Every record is matched, not due yet, or written off.</p>")
    else:
        shown = exceptions[:limit]
        if len(exceptions) > limit:
            parts.append(
                f"<p>The first {limit:,} of {len(exceptions):,}, newest first; the CSV export "
                "lists every record.</p>"
            )
        parts.append(
            _table(
                ["Date", "Where", "What", "Reference", "Description", "Amount", "Status"],
                [2, 4, 2, 4, 5, 2, 3],
            )
        )
        for line in shown:
            colour = STATUS_COLOURS.get(line.status, "#000000")
            parts.append(
                "<tr>"
                f"<td style='white-space: nowrap'>{escape(words.day(line))}</td>"
                f"<td>{escape(words.where(line))}</td>"
                f"<td>{escape(KIND_LABELS.get(line.kind, line.kind))}</td>"
                f"<td>{escape(line.reference)}</td>"
                f"<td>{escape(line.description[:80])}</td>"
                f"<td align='right' style='white-space: nowrap'>{escape(words.amount(line))}</td>"
                f"<td><font color='{colour}'>{escape(status_label(line.status))}</font></td>"
                "</tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def _table(headings: Sequence[str], weights: Sequence[int]) -> str:
    total = sum(weights)
    cells = "".join(
        f"<th align='left' width='{round(100 * weight / total)}%' bgcolor='#eef1f4'>"
        f"{escape(heading)}</th>"
        for heading, weight in zip(headings, weights, strict=True)
    )
    return (
        "<table border='1' cellspacing='0' cellpadding='3' width='100%' "
        f"style='border-color:#d1d9e0; border-collapse:collapse'><tr>{cells}</tr>"
    )


def write_pdf(path: Path, html: str, title: str) -> None:
    """Lay `html` out on A4 pages and write it to `path` (through a partial file, so a
    half-written report never takes the name). Runs on the thread that calls it."""
    partial = path.with_name(path.name + ".partial")
    writer = QPdfWriter(str(partial))
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    # Landscape: the list of exceptions has seven columns, and amounts must not wrap.
    writer.setPageOrientation(QPageLayout.Orientation.Landscape)
    writer.setPageMargins(QMarginsF(15, 15, 15, 15), QPageLayout.Unit.Millimeter)
    writer.setTitle(title)
    writer.setCreator("Switchboard")
    document = QTextDocument()
    font = QFont()
    font.setPointSize(8)
    document.setDefaultFont(font)
    document.setDefaultStyleSheet(
        "h1 { font-size: 16pt; } h2 { font-size: 11pt; margin-top: 12px; } "
        "th { font-weight: bold; }"
    )
    document.setHtml(html)
    document.print_(writer)
    del document
    del writer  # the file is complete once the writer is gone
    partial.replace(path)


# QThreads still running, held here until they finish even if whoever awaited them is gone.
_threads: set[QThread] = set()


class _Worker(QThread):
    def __init__(self, work: Callable[[], None], done: Callable[[BaseException | None], None]):
        super().__init__()
        self._work = work
        self._done = done

    def run(self) -> None:
        error: BaseException | None = None
        try:
            self._work()
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        self._done(error)


async def in_qt_thread(work: Callable[[], None]) -> None:
    """Run `work()` on a QThread of its own and await it on the GUI loop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(error: BaseException | None) -> None:
        worker.wait()  # it has returned from run() or is about to
        _threads.discard(worker)
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    worker = _Worker(work, lambda error: loop.call_soon_threadsafe(finish, error))
    _threads.add(worker)
    worker.start()
    await done


async def export_pdf(
    path: Path,
    summary: RunSummary,
    exceptions: Sequence[Line],
    words: LineWords,
    school: str,
) -> None:
    def work() -> None:
        html = report_html(summary, exceptions, words, school)
        write_pdf(path, html, f"Reconciliation report — {school}")

    await in_qt_thread(work)
