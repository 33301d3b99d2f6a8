"""Exporter benchmark: scrape against a plain prometheus_client baseline, scrape vs history,
ingest against the read + parse floor, CPU and RSS of a long run.

    python3 bench/bench_exporter.py [--nodes 3,30,100,300] [--reps 30] [--history 100000]
                                    [--ingest-files 10000] [--long-secs 60] [--only scrape,history,ingest,long]
                                    [--json out.json]

Everything runs on real files in a temporary directory, with real processes:

- scrape: the real exporter process (``python3 -m exporter``) watching N nodes (10 G1 reports
  each, the bench's own pid as every node's process, the report folder as its work folder),
  and, as the baseline, a plain prometheus_client process serving the same series as plain
  ``Gauge``s (``make_wsgi_app``, its own server). Each is fetched with a raw HTTP GET carrying
  Prometheus 2.42's own Accept header and ``Accept-Encoding: gzip``, alternately, ``--reps``
  times: min and median of each, and their ratios. "quiet": no new report between scrapes;
  "fresh": one new report per node before each scrape (a live run at one scrape per epoch).
- history: one node whose folder holds 1,000 and then ``--history`` reports, ingested in
  full first; then scrapes with no new report and with one new report each (in-process
  ``render()``, min and median): the scrape cost must not grow with the run.
- ingest: ``--ingest-files`` G1 reports of 7 kB through the collector's ingest (a fresh
  collector per repetition, page cache warm), against the floor of reading the same files
  (``open().read()``) and ``json.loads`` (and ``orjson.loads``) each; files/s, min and median
  over 7 repetitions, and the ratios of the medians. Also with orjson switched off (stdlib only).
- long: the real exporter scraped every 5 s while 3 nodes write one report per second.

Measured: see docs/performance.md.
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter import reports as reports_mod  # noqa: E402
from exporter.collector import Setup, SoakCollector, Source  # noqa: E402
from soakcore.services import free_port, wait_http_ok  # noqa: E402

G1 = (ROOT / "tests" / "fixtures" / "reports" / "g1_storage" / "epoch-3.json").read_text()
# What Prometheus 2.42 sends with every scrape (scrape/scrape.go).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
HEADERS = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "Prometheus/2.42.0",
           "X-Prometheus-Scrape-Timeout-Seconds": "10"}


def report(epoch: int) -> str:
    """The real G1 storage example with this epoch's index and height, observed now (about 7 KB)."""
    doc = json.loads(G1)
    doc["settlement_report"]["epoch_index"] = epoch
    doc["node_snapshot"]["consensus"]["committed_height"] = 4000 + epoch
    doc["observed_at_unix_ms"] = int(time.time() * 1000)
    return json.dumps(doc)


def fill(folder: Path, start: int, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for epoch in range(start, start + count):
        (folder / f"epoch-{epoch}.json").write_text(report(epoch))


def stats(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs)}


# -- scrape over HTTP against the plain-Gauge baseline -----------------------------------
def get(port: int) -> tuple[float, bytes, dict[str, str]]:
    """One raw GET as Prometheus sends it: seconds until the whole (compressed) body is read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    conn.request("GET", "/metrics", headers=HEADERS)
    resp = conn.getresponse()
    body = resp.read()
    took = time.perf_counter() - started
    headers = {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"GET :{port}/metrics: {resp.status}")
    return took, body, headers


def decoded(body: bytes, headers: dict[str, str]) -> str:
    return (gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body).decode()


def serve_baseline(exposition: Path, port: int) -> None:
    """The baseline process: the same series as plain prometheus_client Gauges, served by
    prometheus_client's own WSGI app and server (``start_http_server``)."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server
    from prometheus_client.parser import text_string_to_metric_families
    registry = CollectorRegistry(auto_describe=False)
    for fam in text_string_to_metric_families(exposition.read_text()):
        by_name: dict[str, Gauge] = {}
        for s in fam.samples:
            g = by_name.get(s.name)
            if g is None:
                g = by_name[s.name] = Gauge(s.name, fam.documentation or s.name, sorted(s.labels),
                                            registry=registry)
            g.labels(**s.labels).set(s.value)
    start_http_server(port, "127.0.0.1", registry)
    threading.Event().wait()


def scrape_vs_baseline(tmp: Path, counts: list[int], reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pid = str(os.getpid())  # a live process per node: the /proc reads are in the cost
    for n in counts:
        dirs = [tmp / f"nodes{n}" / f"n{i}" for i in range(n)]
        for d in dirs:
            fill(d, 0, 10)
        port = free_port()
        argv = [sys.executable, "-m", "exporter", "--listen", f"127.0.0.1:{port}", "--run-id", "bench",
                "--topology", "bench", "--profile", "soak_smoke", "--log-level", "ERROR"]
        for i, d in enumerate(dirs):
            argv += ["--node", f"n{i}={d}", "--pid", f"n{i}={pid}"]
        exporter = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
        baseline = None
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/metrics", 60, exporter)
            time.sleep(2.5)  # past the racy window of the new folders: a steady scrape
            _, body, headers = get(port)
            series = sum(1 for line in decoded(body, headers).splitlines() if line and not line.startswith("#"))
            expo_file = tmp / f"exposition{n}.txt"  # the text format, for the baseline's Gauges
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
                expo_file.write_bytes(resp.read())
            bport = free_port()
            baseline = subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(expo_file), str(bport)],
                                        cwd=ROOT, stdout=subprocess.DEVNULL)
            wait_http_ok(f"http://127.0.0.1:{bport}/metrics", 60, baseline)
            _, bbody, bheaders = get(bport)
            bseries = sum(1 for line in decoded(bbody, bheaders).splitlines() if line and not line.startswith("#"))
            for _ in range(3):  # warm both
                get(port), get(bport)
            quiet, plain, fresh = [], [], []
            for _ in range(reps):
                quiet.append(get(port)[0])
                plain.append(get(bport)[0])
            for k in range(reps):
                for d in dirs:
                    fill(d, 10 + k, 1)
                fresh.append(get(port)[0])
            q, p, f = stats(quiet), stats(plain), stats(fresh)
            out[str(n)] = {
                "series": series, "baseline_series": bseries,
                "exporter_content_type": headers.get("content-type"), "exporter_gzip_bytes": len(body),
                "baseline_content_type": bheaders.get("content-type"), "baseline_gzip_bytes": len(bbody),
                "exporter_quiet_s": q, "exporter_fresh_s": f, "baseline_s": p,
                "ratio_quiet_to_baseline": {"min": q["min"] / p["min"], "median": q["median"] / p["median"]},
                "ratio_fresh_to_baseline": {"min": f["min"] / p["min"], "median": f["median"] / p["median"]},
            }
            print(f"scrape {n:4d} nodes ({series} series): exporter quiet min {q['min'] * 1e3:6.2f} ms "
                  f"median {q['median'] * 1e3:6.2f} ms | fresh min {f['min'] * 1e3:6.2f} median "
                  f"{f['median'] * 1e3:6.2f} ms | plain Gauges min {p['min'] * 1e3:6.2f} median "
                  f"{p['median'] * 1e3:6.2f} ms | ratio quiet/plain min {q['min'] / p['min']:.2f} "
                  f"median {q['median'] / p['median']:.2f}, fresh/plain median {f['median'] / p['median']:.2f}",
                  flush=True)
        finally:
            for proc in (exporter, baseline):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
    return out


# -- scrape vs history --------------------------------------------------------------------
def history(tmp: Path, sizes: list[int], reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in sizes:
        d = tmp / f"history{size}" / "n0"
        fill(d, 0, size)
        old = time.time() - 60  # a folder written a while ago: past the racy window
        os.utime(d, (old, old))
        c = SoakCollector(Setup(run_id="bench", topology="bench", sources=(
            Source("n0", report_dir=str(d), work_dir=str(d), pid=str(os.getpid())),)), settle_s=0.0)
        started = time.perf_counter()
        c.render()
        ingest_s = time.perf_counter() - started
        quiet, fresh = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            c.render()
            quiet.append(time.perf_counter() - t0)
        for k in range(reps):
            fill(d, size + k, 1)
            t0 = time.perf_counter()
            c.render()
            fresh.append(time.perf_counter() - t0)
        out[str(size)] = {"first_scrape_files_per_s": size / ingest_s, "quiet_s": stats(quiet),
                          "fresh_s": stats(fresh)}
        q, f = stats(quiet), stats(fresh)
        print(f"history {size:6d} reports: scrape quiet min {q['min'] * 1e3:.2f} median {q['median'] * 1e3:.2f} ms | "
              f"one new report min {f['min'] * 1e3:.2f} median {f['median'] * 1e3:.2f} ms "
              f"(first scrape ingested {size / ingest_s:,.0f} files/s)", flush=True)
    keys = list(out)
    if len(keys) >= 2:
        a, b = out[keys[0]], out[keys[-1]]
        out["ratio_largest_to_smallest"] = {"quiet_median": b["quiet_s"]["median"] / a["quiet_s"]["median"],
                                            "fresh_median": b["fresh_s"]["median"] / a["fresh_s"]["median"]}
        print(f"history {keys[-1]} vs {keys[0]}: quiet median x{out['ratio_largest_to_smallest']['quiet_median']:.2f}, "
              f"fresh median x{out['ratio_largest_to_smallest']['fresh_median']:.2f}", flush=True)
    return out


# -- ingest against the read + parse floor -------------------------------------------------
def _rate(files: int, fn: Callable[[], None], reps: int) -> dict[str, float]:
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        rates.append(files / (time.perf_counter() - t0))
    return {"min": min(rates), "median": statistics.median(rates)}


def ingest(tmp: Path, files: int, reps: int = 7) -> dict[str, Any]:
    import orjson
    d = tmp / "ingest" / "n0"
    fill(d, 0, files)
    paths = [str(d / name) for name in os.listdir(d)]

    def floor(loads: Callable[[bytes], Any]) -> Callable[[], None]:
        def run() -> None:
            for p in paths:
                with open(p, "rb") as fh:
                    loads(fh.read())
        return run

    def through_collector() -> None:
        c = SoakCollector(Setup(run_id="bench", topology="bench", sources=(Source("n0", report_dir=str(d)),)),
                          settle_s=0.0)
        c.ingest()
        assert c.views["n0"].reports_total == files

    for _ in range(2):  # page cache and interpreter warm
        floor(json.loads)()
        through_collector()
    out: dict[str, Any] = {"files": files, "bytes_per_file": os.path.getsize(paths[0])}
    # Interleaved, so both see the same machine: ingest, floors, ingest with the stdlib only.
    runs: dict[str, list[float]] = {k: [] for k in ("ingest", "read_json_loads", "read_orjson_loads",
                                                     "ingest_stdlib_json")}
    for _ in range(reps):
        runs["ingest"].append(_rate(files, through_collector, 1)["min"])
        runs["read_json_loads"].append(_rate(files, floor(json.loads), 1)["min"])
        runs["read_orjson_loads"].append(_rate(files, floor(orjson.loads), 1)["min"])
        saved = reports_mod._orjson
        reports_mod._orjson = None
        try:
            runs["ingest_stdlib_json"].append(_rate(files, through_collector, 1)["min"])
        finally:
            reports_mod._orjson = saved
    for k, xs in runs.items():
        out[k + "_files_per_s"] = {"min": min(xs), "median": statistics.median(xs)}
    med = {k: statistics.median(xs) for k, xs in runs.items()}
    out["ratio_ingest_to_read_json_loads"] = med["ingest"] / med["read_json_loads"]
    out["ratio_ingest_to_read_orjson_loads"] = med["ingest"] / med["read_orjson_loads"]
    out["ratio_ingest_stdlib_to_read_json_loads"] = med["ingest_stdlib_json"] / med["read_json_loads"]
    out["orjson"] = orjson.__version__
    out["orjson_depth_guard"] = not reports_mod._ORJSON_DEPTH_SAFE
    for k, xs in runs.items():
        print(f"ingest {k:22s} min {min(xs):8,.0f} median {statistics.median(xs):8,.0f} files/s", flush=True)
    print(f"ingest ratios (medians): ingest / read+json.loads {out['ratio_ingest_to_read_json_loads']:.2f}, "
          f"ingest / read+orjson.loads {out['ratio_ingest_to_read_orjson_loads']:.2f}, "
          f"stdlib-only ingest / read+json.loads {out['ratio_ingest_stdlib_to_read_json_loads']:.2f} "
          f"(orjson {orjson.__version__}, depth guard {'on' if out['orjson_depth_guard'] else 'off'})", flush=True)
    return out


# -- long run --------------------------------------------------------------------------------
def long_run(tmp: Path, secs: float, nodes: int = 3) -> dict[str, float]:
    """The real exporter process, scraped over HTTP every 5 s while nodes write one report per second."""
    dirs = [tmp / "long" / f"n{i}" for i in range(nodes)]
    for d in dirs:
        d.mkdir(parents=True)
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "--listen", f"127.0.0.1:{port}", "--profile", "soak_smoke"]
    argv += [a for i, d in enumerate(dirs) for a in ("--node", f"n{i}={d}")]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()

    def writer() -> None:
        epoch = 0
        while not stop.wait(1.0):
            for d in dirs:
                fill(d, epoch, 1)
            epoch += 1

    thread = threading.Thread(target=writer, daemon=True)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/metrics", 20, proc)
        ps = psutil.Process(proc.pid)
        thread.start()
        cpu0, t0, rss = sum(ps.cpu_times()[:2]), time.monotonic(), []
        while time.monotonic() - t0 < secs:
            time.sleep(5)
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            rss.append(ps.memory_info().rss)
        cpu_pct = 100 * (sum(ps.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
        result = {"secs": secs, "nodes": nodes, "cpu_percent": cpu_pct, "rss_first_mib": rss[0] / 2**20,
                  "rss_last_mib": rss[-1] / 2**20, "rss_max_mib": max(rss) / 2**20}
        print(f"long run {secs:.0f}s, {nodes} nodes at 1 report/s: CPU {cpu_pct:.2f} %, RSS "
              f"{result['rss_first_mib']:.1f} -> {result['rss_last_mib']:.1f} MiB", flush=True)
        return result
    finally:
        stop.set()
        proc.terminate()
        proc.wait(10)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-baseline":
        serve_baseline(Path(sys.argv[2]), int(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", default="3,30,100,300", help="node counts for the scrape comparison")
    p.add_argument("--reps", type=int, default=30, help="scrapes per measurement")
    p.add_argument("--history", type=int, default=100_000, help="reports for the large-history case")
    p.add_argument("--ingest-files", type=int, default=10_000)
    p.add_argument("--long-secs", type=float, default=60.0)
    p.add_argument("--only", default="scrape,history,ingest,long")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    only = set(a.only.split(","))
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-exporter-") as tmp:
        if "scrape" in only:
            result["scrape_vs_baseline"] = scrape_vs_baseline(Path(tmp), [int(x) for x in a.nodes.split(",")], a.reps)
        if "history" in only:
            result["history"] = history(Path(tmp), [1000, a.history], a.reps)
        if "ingest" in only:
            result["ingest"] = ingest(Path(tmp), a.ingest_files)
        if "long" in only:
            result["long_run"] = long_run(Path(tmp), a.long_secs)
    text = json.dumps(result, indent=2)
    if a.json:
        a.json.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
