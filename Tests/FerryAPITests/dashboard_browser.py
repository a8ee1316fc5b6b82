"""Drives a real headless Chromium over the DevTools protocol for the dashboard's tests.

Usage: dashboard_browser.py BASE_URL SCREENSHOT_DIR < steps.json

Each step is one of:
  {"visit": "/path", "expect": ["text", ...], "screenshot": "name.png"}
  {"login": "token"}                     sign in through the /login form
  {"click": "css selector", "expect": [...]}   press a button, wait for the next page
  {"evaluate": "javascript expression"}  its value (awaited when a promise) is reported
Prints one JSON object a step: the page's URL, the texts expected but missing, the console
errors (console.error, uncaught exceptions, failed loads, CSP violations) and any value.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


class Browser:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="ferry-chromium-")
        self.process = subprocess.Popen(
            # Niced: the browser must not starve the timing-sensitive tests running beside it.
            ["nice", "-n", "10", "chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
             "--user-data-dir=" + self.profile, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 60
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.time() > deadline:
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        deadline = time.time() + 30
        while True:
            pages = json.load(urllib.request.urlopen("http://127.0.0.1:%s/json/list" % port))
            pages = [p for p in pages if p.get("type") == "page"]
            if pages or time.time() > deadline:
                break
            time.sleep(0.1)
        self.socket = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60)
        self.next_id = 0
        self.errors = []
        self.loaded = False
        for method in ["Page.enable", "Runtime.enable", "Log.enable"]:
            self.call(method)
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)

    def handle(self, message):
        method = message.get("method")
        params = message.get("params", {})
        if method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append("%s (%s)" % (entry.get("text", ""), entry.get("url", "")))

    def call(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError("%s: %s" % (method, message["error"]))
                return message.get("result", {})
            self.handle(message)

    def wait_loaded(self):
        deadline = time.time() + 60
        while not self.loaded and time.time() < deadline:
            self.handle(json.loads(self.socket.recv()))
        # Let late console messages and the page's own script arrive.
        end = time.time() + 0.5
        self.socket.settimeout(0.1)
        while time.time() < end:
            try:
                self.handle(json.loads(self.socket.recv()))
            except websocket.WebSocketTimeoutException:
                pass
        self.socket.settimeout(60)

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def navigate(self, url):
        self.loaded = False
        self.call("Page.navigate", url=url)
        self.wait_loaded()

    def after(self, action):
        self.loaded = False
        self.evaluate(action)
        self.wait_loaded()

    def close(self):
        try:
            self.socket.close()
        finally:
            self.process.kill()
            self.process.wait()


def main():
    base, shots = sys.argv[1], sys.argv[2]
    os.makedirs(shots, exist_ok=True)
    steps = json.load(sys.stdin)
    browser = Browser()
    try:
        for step in steps:
            browser.errors = []
            value = None
            if "visit" in step:
                browser.navigate(base + step["visit"])
            elif "login" in step:
                browser.navigate(base + "/login")
                token = json.dumps(step["login"])
                browser.after("document.querySelector('input[name=token]').value = %s; document.querySelector('form.login').submit()" % token)
            elif "click" in step:
                browser.after("document.querySelector(%s).click()" % json.dumps(step["click"]))
            elif "evaluate" in step:
                value = browser.evaluate(step["evaluate"])
            text = browser.evaluate("document.body ? document.body.innerText : ''") or ""
            if "screenshot" in step:
                data = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
                with open(os.path.join(shots, step["screenshot"]), "wb") as file:
                    file.write(base64.b64decode(data))
            print(json.dumps({
                "step": step, "url": browser.evaluate("location.href"), "errors": browser.errors,
                "missing": [t for t in step.get("expect", []) if t not in text], "value": value,
            }), flush=True)
    finally:
        browser.close()


if __name__ == "__main__":
    main()
