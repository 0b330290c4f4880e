"""Report layer: one self-contained HTML file mirroring the research report's exhibits."""

from fbgpu.report.html import build_report

__all__ = ["build_report"]
