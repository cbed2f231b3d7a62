"""Reports: read saved benchmark results and render them."""

from .plots import write_plots
from .recommend import recommend
from .summary import summarise
from .tables import markdown, rich_table, write_reports

__all__ = ["write_plots", "recommend", "summarise", "markdown", "rich_table", "write_reports"]
