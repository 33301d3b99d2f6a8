"""``python3 -m grafana [--out DIR]``: regenerate the dashboard JSON (default grafana/dashboards/)."""
from __future__ import annotations

import argparse
from pathlib import Path

from soakcore.errors import UsageError, run_cli


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        from grafana.dashboards import OUT_DIR, write_all
        p = argparse.ArgumentParser(prog="python3 -m grafana", description=__doc__)
        p.add_argument("--out", type=Path, default=OUT_DIR, help="directory to write the JSON into")
        out = p.parse_args(argv).out
        try:
            written = write_all(out)
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot write: {exc.strerror}") from exc
        for path in written:
            print(path)
        return 0
    run_cli("grafana", body)


if __name__ == "__main__":
    main()
