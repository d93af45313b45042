"""Load a carpsim status page in Chromium and report what it shows, as JSON on stdout.

    python tests/integration/web_browser.py URL SCREENSHOT NODE VHID STATE

Run inside a node's namespace (``ip netns exec``) when the page is served there: the browser
must reach the node's own loopback. Exit status 0 once every VHID cell reads STATE.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def post_status(url: str) -> int:
    req = urllib.request.Request(url + "api/node/x/off", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def main(url: str, shot: str, node: str, vhid: str, state: str) -> int:
    errors: list[str] = []
    out: dict[str, object] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        cell = page.locator(f'#carp-{node} tr[data-vhid="{vhid}"] .carp-state')
        expect(cell).to_have_text(state, timeout=15_000)
        out["title"] = page.locator("#title").text_content()
        out["lab_only_hidden"] = page.locator("#topology").is_hidden()
        out["dhcp"] = page.locator(f"#dhcp-{node}").text_content()
        out["hasync"] = page.locator(f"#hasync-{node}").text_content()
        page.screenshot(path=shot, full_page=True)
        browser.close()
    out["post"] = post_status(url)
    out["errors"] = errors
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
