"""`cpr leaderboard`: every run ranked by capability per resource, CPR = (Ψ − Ψ_baseline)/Γ, within groups of the
same Ψ on the same evaluation set, each with its carbon disclosure card (docs/leaderboard.md).

`rank` and `card` are pure (plain records in, rows out); `read` fills them from the MLflow store through the
report's reader; `render` writes Markdown, CSV and one offline HTML page; `build` is what the CLI and the controller
call.
"""

from __future__ import annotations

from orchestrator.leaderboard.build import leaderboard, log_sweep_leaderboard
from orchestrator.leaderboard.rank import Board, CarbonCard, Entry, Group, Row, rank

__all__ = ["Board", "CarbonCard", "Entry", "Group", "Row", "leaderboard", "log_sweep_leaderboard", "rank"]
