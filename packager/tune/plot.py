"""The plot of a tune: every scored trial's validation accuracy against the objective, the Pareto front joined,
the budget line drawn and the winner marked — the picture of the trade-off the table lists."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a build server or a device
import matplotlib.pyplot as plt  # noqa: E402


#: the objective's figure of a trial, its axis label and the scale of the stored value
AXES = {"latency": ("latency_ms", "p50 latency (ms)", 1.0), "size": ("size_bytes", "artifact size (MB)", 1e-6),
        "energy": ("energy_mj", "energy per inference (mJ)", 1.0)}


def _cost(record: Any, objective: str) -> float | None:
    name, _, scale = AXES[objective]
    value = getattr(record, name)
    return None if value is None else value * scale


def plot_trials(summary: Any, path: Path) -> Path:
    """``summary``: a ``tune.TuneSummary`` (not imported: the tune calls this module)."""
    scored = [r for r in summary.trials if r.state == "complete" and r.val_accuracy is not None
              and _cost(r, summary.objective) is not None]
    _, label, _ = AXES[summary.objective]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for within, colour, name in ((True, "tab:green", "within the budget"), (False, "tab:red", "over the budget")):
        group = [r for r in scored if r.within_budget == within]
        if group:
            ax.scatter([_cost(r, summary.objective) for r in group], [r.val_accuracy * 100 for r in group],
                       c=colour, s=36, label=name, zorder=3)
    front = sorted((r for r in scored if r.pareto), key=lambda r: _cost(r, summary.objective))
    if len(front) > 1:
        ax.step([_cost(r, summary.objective) for r in front], [r.val_accuracy * 100 for r in front], where="post",
                color="tab:blue", linewidth=1, label="Pareto front", zorder=2)
    for r in scored:
        ax.annotate(str(r.number), (_cost(r, summary.objective), r.val_accuracy * 100), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    winner = next((r for r in scored if r.number == summary.winner), None)
    if winner is not None:
        ax.scatter([_cost(winner, summary.objective)], [winner.val_accuracy * 100], marker="*", s=260,
                   facecolors="none", edgecolors="black", linewidths=1.2, label=f"winner (trial {winner.number})",
                   zorder=4)
    teacher = summary.teacher_val_accuracy * 100
    ax.axhline(teacher, color="grey", linestyle=":", linewidth=1, label=f"teacher {teacher:.2f}%")
    ax.axhline(teacher - summary.max_accuracy_drop * 100, color="grey", linestyle="--", linewidth=1,
               label=f"budget −{summary.max_accuracy_drop * 100:g} pt")
    ax.set_xlabel(f"{summary.primary_target} {label} on {summary.device}")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"edgepack tune: {len(summary.trials)} trials, {len(scored)} scored")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
