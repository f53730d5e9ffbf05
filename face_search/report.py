"""What the command line prints: query hits as a table or JSON, build and add summaries."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from common.io.names import printable
from face_search.api import GalleryReport, QueryResult


def shown_path(path: str) -> str:
    """``path`` relative to the current folder when it lies below it (shorter tables), its
    undecodable bytes shown as ``\\xNN`` (printing them as they are would fail)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        rel = ".."
    return printable(path if rel.startswith("..") else rel)


def gallery_lines(report: GalleryReport, verb: str) -> list[str]:
    """The summary of a build ("indexed") or an add ("added")."""
    lines = [f"{verb} {report.added:,} faces; the index holds {report.total:,} faces of "
             f"{report.identities:,} identities ({report.num_bits}-bit codes, kind "
             f"{report.kind}) in {shown_path(report.index_dir)} ({report.seconds:.1f} s)"]
    if report.ids is not None and len(report.ids):
        lines.append(f"  gallery ids {int(report.ids[0])}..{int(report.ids[-1])}")
    if report.skipped:
        lines.append(f"skipped {len(report.skipped):,} input(s):")
        lines += [f"  {shown_path(s.source)}: {s.reason}" for s in report.skipped[:10]]
        if len(report.skipped) > 10:
            lines.append(f"  ... and {len(report.skipped) - 10:,} more")
    return lines


def query_table(results: Sequence[QueryResult]) -> str:
    """Each query's hits as an aligned table; unusable inputs listed with the reason."""
    lines = []
    for result in results:
        expected = f"  (identity {result.identity})" if result.identity is not None else ""
        lines.append(f"query {shown_path(result.source)}{expected}")
        if result.error:
            lines.append(f"  skipped: {result.error}")
            continue
        if not result.hits:
            lines.append("  no hit")
            continue
        rows = [("rank", "distance", "gallery_id", "identity", "label", "source")]
        rows += [(str(r), str(h.distance), str(h.gallery_id), h.identity, str(h.label),
                  shown_path(h.source)) for r, h in enumerate(result.hits, 1)]
        widths = [max(len(row[c]) for row in rows) for c in range(5)]
        for row in rows:
            cells = [row[0].rjust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]),
                     row[3].ljust(widths[3]), row[4].rjust(widths[4]), row[5]]
            lines.append("  " + "  ".join(cells))
    return "\n".join(lines)


def query_json(results: Sequence[QueryResult], header: dict[str, Any]) -> str:
    """One JSON document: ``header`` (index, bits, top_k, radius) and every query (a query
    photo's name with undecodable bytes escaped: JSON text is Unicode)."""
    queries = [{**r.to_dict(), "source": printable(r.source) if isinstance(r.source, str)
                else r.source} for r in results]
    return json.dumps({**header, "queries": queries}, indent=2, ensure_ascii=False)
