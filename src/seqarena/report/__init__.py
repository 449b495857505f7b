"""The report: run directories, compare directories, bench results and analyses -> one HTML page."""

from seqarena.report.analysis import write_analysis_charts
from seqarena.report.collect import Inputs, collect
from seqarena.report.html import write_report

__all__ = ["Inputs", "collect", "write_analysis_charts", "write_report"]
