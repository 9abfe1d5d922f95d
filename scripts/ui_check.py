#!/usr/bin/env python3
"""`make ui-check`: the Swagger page as a browser shows it.

Starts `simplebank serve` on free loopback ports against DB_SOURCE, opens `/swagger-ui` in
Debian's headless Chromium (installed with apt if missing), lets the page's JavaScript fetch and
render the OpenAPI document, and reads the rendered DOM: every operation of
`/api-docs/openapi.json` must be listed (method and path), and the Authorize button must be
there. Chromium is started with every background-networking feature off and a fresh profile, so
it talks to nothing but the server on loopback.
"""

import html
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import served  # noqa: E402  (scripts/served.py: start the server, read its ready file)

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    print("ui-check: no Chromium; installing Debian's chromium", file=sys.stderr)
    subprocess.run([str(ROOT / "scripts" / "apt.sh"), "chromium"], check=True)
    return shutil.which("chromium") or sys.exit("ui-check: chromium did not install")


def rendered_dom(browser, url):
    with tempfile.TemporaryDirectory(prefix="ui-check-") as profile:
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-extensions", "--disable-default-apps",
             f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or "<html" not in result.stdout:
        sys.exit(f"ui-check: chromium failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def listed_operations(dom):
    """{(METHOD, path)} of the operations Swagger UI rendered: each is an `opblock` whose summary
    holds the method and the path (`data-path`)."""
    found = set()
    for block in re.finditer(r'<div class="opblock-summary opblock-summary-(\w+)".*?data-path="([^"]+)"', dom, re.S):
        found.add((block.group(1).upper(), html.unescape(block.group(2))))
    return found


def main():
    db_source = served.require_db_source("ui-check")
    binary = ROOT / "target" / "debug" / "simplebank"
    browser = chromium()
    server, base, _ = served.serve(binary, ROOT / "target" / "ui-check-server.log", DB_SOURCE=db_source)
    try:
        with urllib.request.urlopen(f"{base}/api-docs/openapi.json", timeout=30) as response:
            document = json.load(response)
        wanted = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item if method in METHODS}
        dom = rendered_dom(browser, f"{base}/swagger-ui/")
    finally:
        server.terminate()
        server.wait(timeout=30)
    listed = listed_operations(dom)
    missing = sorted(wanted - listed)
    authorize = re.search(r'<button[^>]*class="[^"]*\bauthorize\b[^"]*"[^>]*>.*?Authorize', dom, re.S)
    print(f"ui-check: the OpenAPI document has {len(wanted)} operations; Swagger UI in Chromium "
          f"lists {len(listed & wanted)} of them; Authorize button: {'yes' if authorize else 'no'}")
    (ROOT / "target" / "ui-check-dom.html").write_text(dom)
    if missing:
        sys.exit("ui-check: not listed on the page: "
                 + ", ".join(f"{m} {p}" for m, p in missing) + " (DOM in target/ui-check-dom.html)")
    if not authorize:
        sys.exit("ui-check: no Authorize button on the page (DOM in target/ui-check-dom.html)")
    if not wanted:
        sys.exit("ui-check: the OpenAPI document lists no operation")
    print("ui-check: passed")


if __name__ == "__main__":
    main()
