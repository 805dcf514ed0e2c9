#!/usr/bin/env python3
"""A webhook receiver for bench/alerts.sh: listens on 127.0.0.1:PORT, answers 200 to
every POST and appends {"at": unix seconds of arrival, "body": the JSON body} to FILE,
one line each. Runs until killed."""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

port, path = int(sys.argv[1]), sys.argv[2]


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        at = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()
        with open(path, "a") as f:
            f.write(json.dumps({"at": at, "body": json.loads(body or b"{}")}) + "\n")

    def log_message(self, *args):
        pass


open(path, "a").close()
HTTPServer(("127.0.0.1", port), Hook).serve_forever()
