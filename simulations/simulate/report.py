"""The report folder: ``report.json`` with every figure, four PNG plots, ``report.html``.

Plots are drawn with matplotlib's Agg backend (no display needed). Times are seconds
from the start of the load; fault windows are shaded on the time plots so a dip can be
read against its cause.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from rich.console import Console
from rich.table import Table

from simulations.simulate.invariants import Check
from simulations.simulate.queries import OUTCOMES
from simulations.traffic import completion_poll_s, percentile

if TYPE_CHECKING:
    from simulations.simulate.run import Run

PLOTS = ("throughput.png", "latency.png", "flows.png", "queues.png")
WHOLE = {"answered", "no_record"}  # a merged view with only these items is complete


def build(run: Run, checks: list[Check]) -> dict[str, Any]:
    from simulations.simulate.run import summary

    subs = run.load.submissions
    t0 = run.t0
    final = run.watcher.final
    seconds = int(run.options.duration_s + run.settle_s) + 2
    submitted = [0] * seconds
    completed = [0] * seconds
    errors = [0] * seconds
    per_second_latency: list[list[float]] = [[] for _ in range(seconds)]
    latencies = []
    for s in subs:
        at = min(seconds - 1, max(0, int(s.answered - t0)))
        if s.app_id:
            submitted[at] += 1
            if s.app_id in final:
                seen = final[s.app_id][1]
                done_at = min(seconds - 1, max(0, int(seen - t0)))
                completed[done_at] += 1
                latency = (seen - s.started) * 1000
                latencies.append(latency)
                per_second_latency[done_at].append(latency)
        elif s.error:
            errors[at] += 1
    for bucket in per_second_latency:
        bucket.sort()
    latencies.sort()
    flows: dict[str, dict[str, int]] = {}
    for s in subs:
        if s.app_id:
            row = flows.setdefault(s.origin, {})
            row[s.owner] = row.get(s.owner, 0) + 1
    error_kinds: dict[str, int] = {}
    for s in subs:
        if s.error:
            error_kinds[s.error] = error_kinds.get(s.error, 0) + 1
    return {
        "options": {
            "topology": run.options.topology,
            "nodes": len(run.topology.specs),
            "duration_s": run.options.duration_s,
            "rate": run.load.rate,
            "mix": run.load.mix,
            "decide_delay_s": run.options.decide_delay_s,
            "seed": run.options.seed,
            "surge": run.load.surge.as_dict() if run.load.surge is not None else None,
            "latency_resolution_ms": round(completion_poll_s(len(run.topology.specs)) * 1000),
        },
        "nodes": [
            {"id": s.node_id, "jurisdiction": s.jurisdiction, "relay": s.relay} for s in run.topology.specs
        ],
        "totals": {**summary(run), "error_kinds": error_kinds},
        "kinds": _per_kind(run),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.5), 1),
            "p90": round(percentile(latencies, 0.9), 1),
            "p99": round(percentile(latencies, 0.99), 1),
            "max": round(latencies[-1], 1) if latencies else 0.0,
        },
        "invariants": [c.as_dict() for c in checks],
        "ok": all(c.ok for c in checks),
        "faults": [f.as_dict() for f in run.faults],
        "series": {
            "second": list(range(seconds)),
            "submitted": submitted,
            "completed": completed,
            "errors": errors,
            # None where nothing completed that second (not a latency of zero).
            "p50_ms": [round(percentile(b, 0.5), 1) if b else None for b in per_second_latency],
            "p99_ms": [round(percentile(b, 0.99), 1) if b else None for b in per_second_latency],
            "samples": [{"t": s.t, "queues": s.queues, "rss_mb": s.rss_mb} for s in run.samples],
        },
        "flows": flows,
        "max_rss_mb": max((max(s.rss_mb.values(), default=0.0) for s in run.samples), default=0.0),
    }


def _ms(values: list[float]) -> dict[str, float]:
    values.sort()
    return {"p50_ms": round(percentile(values, 0.5), 1), "p99_ms": round(percentile(values, 0.99), 1)}


def _per_kind(run: Run) -> dict[str, dict[str, Any]]:
    """Each kind of the mix: accepted and final (by final status) for applications, the
    merged views' items by outcome for queries; latency to final, or to the answer."""
    final = run.watcher.final
    kinds: dict[str, dict[str, Any]] = {}
    for kind in run.load.mix:
        if kind == "query":
            continue
        subs = [s for s in run.load.submissions if s.kind == kind]
        done = [final[s.app_id] for s in subs if s.app_id in final]
        by_status: dict[str, int] = {}
        for status, _ in done:
            by_status[status] = by_status.get(status, 0) + 1
        kinds[kind] = {
            "submitted": len(subs),
            "accepted": sum(1 for s in subs if s.app_id),
            "errors": sum(1 for s in subs if s.error),
            "final": len(done),
            "by_status": by_status,
            **_ms([(final[s.app_id][1] - s.started) * 1000 for s in subs if s.app_id in final]),
        }
    if "query" in run.load.mix:
        queries = run.load.queries
        items = dict.fromkeys(OUTCOMES, 0)
        for q in queries:
            for outcome, n in q.outcomes.items():
                items[outcome] = items.get(outcome, 0) + n
        kinds["query"] = {
            "asked": len(queries),
            "answered": sum(1 for q in queries if q.query_id),
            "errors": sum(1 for q in queries if q.error),
            "complete": sum(1 for q in queries if q.query_id and set(q.outcomes) <= WHOLE),
            "items": items,
            "late_answers": run.late_answers,
            **_ms([(q.answered - q.started) * 1000 for q in queries if q.query_id]),
        }
    return kinds


def _shade(ax: Axes, doc: dict[str, Any]) -> None:
    surge = doc["options"]["surge"]
    if surge is not None:
        end = surge["start_s"] + surge["seconds"]
        ax.axvspan(
            surge["start_s"], end, color="0.5", alpha=0.12, hatch="//", label=f"surge ×{surge['factor']:g}"
        )
    for i, f in enumerate(doc["faults"]):
        if f["applied_at_s"] is None:
            continue
        end = f["reverted_at_s"] if f["reverted_at_s"] is not None else f["applied_at_s"] + f["duration_s"]
        ax.axvspan(f["applied_at_s"], end, color=f"C{(i % 6) + 3}", alpha=0.15, label=f["label"])


def _plots(out: Path, doc: dict[str, Any]) -> None:
    _throughput(out, doc)
    _latency(out, doc)
    _flows(out, doc)
    _queues(out, doc)


def _throughput(out: Path, doc: dict[str, Any]) -> None:
    series = doc["series"]
    x = series["second"]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(x, series["submitted"], label="accepted at counters /s")
    ax.plot(x, series["completed"], label="final at origin /s")
    ax.plot(x, series["errors"], label="submit errors /s", linestyle=":")
    _shade(ax, doc)
    ax.set_xlabel("seconds")
    ax.set_ylabel("applications per second")
    ax.set_title("Throughput")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=90)
    plt.close(fig)


def _latency(out: Path, doc: dict[str, Any]) -> None:
    series = doc["series"]
    x = series["second"]
    fig, ax = plt.subplots(figsize=(9, 4))
    nan = float("nan")
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        ax.plot(x, [nan if v is None else v for v in series[key]], label=label, marker=".")
    _shade(ax, doc)
    ax.set_yscale("symlog")
    ax.set_xlabel("seconds (by completion)")
    ax.set_ylabel("submit to final, ms")
    ax.set_title("Latency percentiles")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=90)
    plt.close(fig)


def _flows(out: Path, doc: dict[str, Any]) -> None:
    nodes = [n["id"] for n in doc["nodes"]]
    matrix = [[doc["flows"].get(a, {}).get(b, 0) for b in nodes] for a in nodes]
    size = max(5.0, len(nodes) * 0.22)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(nodes)), nodes, rotation=90, fontsize=6 if len(nodes) > 8 else 9)
    ax.set_yticks(range(len(nodes)), nodes, fontsize=6 if len(nodes) > 8 else 9)
    ax.set_xlabel("owner")
    ax.set_ylabel("origin")
    ax.set_title("Accepted applications, origin to owner")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "flows.png", dpi=90)
    plt.close(fig)


def _queues(out: Path, doc: dict[str, Any]) -> None:
    nodes = [n["id"] for n in doc["nodes"]]
    series = doc["series"]
    fig, ax = plt.subplots(figsize=(9, 4))
    samples = series["samples"]
    ts = [s["t"] for s in samples]
    busiest = sorted(nodes, key=lambda n: -max((s["queues"].get(n, 0) for s in samples), default=0))[:8]
    for n in busiest:
        ax.plot(ts, [max(0, s["queues"].get(n, 0)) for s in samples], label=n)
    _shade(ax, doc)
    ax.set_xlabel("seconds")
    ax.set_ylabel("outbox items pending")
    ax.set_title("Queue depths (busiest nodes)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "queues.png", dpi=90)
    plt.close(fig)


def _html(doc: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{'✔' if c['ok'] else '✘'}</td><td>{html.escape(c['name'])}</td><td>{c['checked']}</td>"
        f"<td>{c['broken']}</td><td>{html.escape('; '.join(c['examples']))}</td></tr>"
        for c in doc["invariants"]
    )
    faults = "".join(
        f"<li>{html.escape(f['label'])}: {f['applied_at_s']} s to {f['reverted_at_s']} s"
        + (f" — {html.escape(json.dumps(f['observed'], ensure_ascii=False))}" if f["observed"] else "")
        + "</li>"
        for f in doc["faults"]
    )
    totals = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in doc["totals"].items()
    )
    surge = doc["options"]["surge"]
    load = (
        f"<p>Surge: {surge['factor']:g} times the rate from {surge['start_s']:g} s "
        f"for {surge['seconds']:g} s (hatched on the time plots).</p>"
        if surge is not None
        else ""
    )
    kinds = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in KIND_COLUMNS) + "</tr>"
    kinds += "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in kind_rows(doc["kinds"])
    )
    lat = ", ".join(f"{k} {v} ms" for k, v in doc["latency_ms"].items())
    resolution = doc["options"]["latency_resolution_ms"]
    images = "".join(f'<img src="{p}" alt="{p}">' for p in PLOTS)
    verdict = "all invariants hold" if doc["ok"] else "INVARIANTS BROKEN"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>yrd simulate report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
img{{max-width:100%;display:block;margin:1em 0}}
td{{padding:2px 8px;border-bottom:1px solid #ddd;vertical-align:top}}</style></head><body>
<h1>yrd simulate: {html.escape(doc["options"]["topology"])}, {doc["options"]["nodes"]} nodes — {verdict}</h1>
<p>{html.escape(json.dumps(doc["options"], ensure_ascii=False))}</p>
<p>Latency submit to final at the origin (read every {resolution} ms): {lat}.
Largest node RSS: {doc["max_rss_mb"]:.0f} MB.</p>
<h2>Invariants</h2><table><tr><th></th><th>invariant</th><th>checked</th><th>broken</th><th>examples</th></tr>{rows}</table>
<h2>Totals</h2><table>{totals}</table>
<h2>Per kind</h2><table>{kinds}</table>
<h2>Faults</h2><ul>{faults or "<li>none</li>"}</ul>{load}
<h2>Plots</h2>{images}
</body></html>
"""


def write(out: Path, doc: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    _plots(out, doc)
    (out / "report.html").write_text(_html(doc), encoding="utf-8")
    return out


KIND_COLUMNS = ("kind", "asked", "accepted / answered", "errors", "final / items", "p50 / p99")


def kind_rows(kinds: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per kind of the mix (:data:`KIND_COLUMNS`): what the counters took and what
    came of it, for the printed summary and the HTML report alike."""
    rows = []
    for kind, k in kinds.items():
        if kind == "query":
            items = ", ".join(f"{n} {o}" for o, n in k["items"].items())
            row = [k["asked"], k["answered"], k["errors"], f"{items}; {k['late_answers']} late"]
        else:
            statuses = ", ".join(f"{n} {s}" for s, n in sorted(k["by_status"].items()))
            row = [k["submitted"], k["accepted"], k["errors"], f"{k['final']} final ({statuses})"]
        rows.append([kind, *map(str, row), f"{k['p50_ms']:.0f} / {k['p99_ms']:.0f} ms"])
    return rows


def print_kinds(console: Console, kinds: dict[str, dict[str, Any]]) -> None:
    table = Table(title="per kind")
    for name in KIND_COLUMNS:
        table.add_column(name, justify="left" if name in ("kind", "final / items") else "right")
    for row in kind_rows(kinds):
        table.add_row(*row)
    console.print(table)


def print_checks(console: Console, checks: list[Check]) -> None:
    table = Table(title="invariants")
    table.add_column("")
    table.add_column("invariant")
    table.add_column("checked", justify="right")
    table.add_column("broken", justify="right")
    table.add_column("first examples")
    for c in checks:
        table.add_row(
            "[green]ok[/green]" if c.ok else "[red]BROKEN[/red]",
            c.name,
            str(c.checked),
            str(c.count),
            "; ".join(c.problems),
        )
    console.print(table)
