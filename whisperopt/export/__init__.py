"""Export a benchmarked recipe as a self-contained directory with a model card, and push it to the hub."""

from .bundle import ExportResult, check_repo_id, export_results, push_to_hub, read_summary, select_row
from .card import model_card

__all__ = ["ExportResult", "check_repo_id", "export_results", "model_card", "push_to_hub", "read_summary",
           "select_row"]
