"""The compose stack's default Alertmanager receiver: a webhook that writes each alert it is
sent as one line, to its stdout (``docker compose logs -f alert-log``) and appended as JSON
to ``$ALERT_LOG`` (``.tmp/compose-alerts/alerts.log`` on the host, the same fields as a
run's ``alerts.log``). Standard library only; ``GET /healthz`` answers 200.

    ALERT_LOG=/tmp/alerts.log ALERT_LOG_LISTEN=127.0.0.1:9095 python3 prometheus/alert_log.py
"""
from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOG = Path(os.environ.get("ALERT_LOG", "/alerts/alerts.log"))
HOST, _, PORT = os.environ.get("ALERT_LOG_LISTEN", "0.0.0.0:9095").rpartition(":")


def lines(body: bytes, received: float) -> list[tuple[str, str]]:
    """(one human line, one JSON line) per alert of an Alertmanager notification."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {"raw": body.decode(errors="replace")}
    alerts = doc.get("alerts", []) if isinstance(doc, dict) else []
    out = []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(received))
    for a in alerts or [{"raw": doc}]:
        labels, notes = a.get("labels", {}), a.get("annotations", {})
        text = (f"{stamp} {str(a.get('status', '?')).upper():8} {labels.get('alertname', '?')} "
                f"[{labels.get('severity', '-')}] run={labels.get('run_id', '-')} topology={labels.get('topology', '-')} "
                f"node={labels.get('node', '-')}: {notes.get('summary', '')} {notes.get('runbook_url', '')}").rstrip()
        record = {"received_at": received, "status": a.get("status"), "labels": labels, "annotations": notes,
                  "startsAt": a.get("startsAt"), "endsAt": a.get("endsAt")}
        out.append((text, json.dumps(record if "raw" not in a else {"received_at": received, **a}, sort_keys=True)))
    return out


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        got = lines(body, time.time())
        LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(LOG, "a") as fh:
            fh.write("".join(j + "\n" for _, j in got))
        print("\n".join(t for t, _ in got), flush=True)
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n" if self.path == "/healthz" else b"")

    def log_message(self, *args: object) -> None:
        return


def main() -> None:
    server = ThreadingHTTPServer((HOST or "0.0.0.0", int(PORT or 9095)), Handler)
    print(f"alert-log: listening on {HOST}:{server.server_address[1]}, appending to {LOG}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
