"""A tiny app: stdlib only. Listens on $PORT, answers / and /healthz."""
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING = os.environ.get("GREETING", "Hello")
REPLICA = os.environ.get("BIFROST_REPLICA", "0")
DEPLOYMENT = os.environ.get("BIFROST_DEPLOYMENT", "local")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, {"status": "ok"})
        elif path == "/":
            self._send(200, {"message": GREETING, "replica": REPLICA,
                             "deployment": DEPLOYMENT, "host": socket.gethostname()})
        else:
            self._send(404, {"error": "not found", "path": path})

    def log_message(self, fmt, *args):
        print("%s %s" % (self.address_string(), fmt % args), flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"hello-python listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
