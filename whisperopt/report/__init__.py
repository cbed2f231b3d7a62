"""Reports: read saved benchmark results and render them."""

from .summary import summarise
from .tables import markdown, rich_table, write_reports

__all__ = ["summarise", "markdown", "rich_table", "write_reports"]
