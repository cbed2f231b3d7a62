"""Reports: read saved benchmark results and render them."""

from .columns import COLUMNS, DEFAULT_COLUMNS, select_columns
from .html import write_html
from .output import failed_recipes, write_all
from .plots import write_plots
from .recommend import RANK_BY, check_criteria, recommend, recommend_long
from .summary import summarise
from .tables import markdown, recommendation_lines, rich_table
from .workloads import WORKLOADS, summarise_results, terminal_parts, write_reports

__all__ = ["write_html", "failed_recipes", "write_all", "write_plots", "RANK_BY", "check_criteria", "recommend", "recommend_long", "summarise",
           "COLUMNS", "DEFAULT_COLUMNS", "markdown", "recommendation_lines", "rich_table", "select_columns",
           "WORKLOADS", "summarise_results", "terminal_parts", "write_reports"]
