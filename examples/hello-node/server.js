// A tiny app: no dependencies. Listens on $PORT, answers / and /healthz.
const http = require("http");

const port = Number(process.env.PORT || 8080);
const server = http.createServer((req, res) => {
  const body = req.url === "/healthz"
    ? { status: "ok" }
    : { message: "Hello from Node", replica: process.env.BIFROST_REPLICA || "0", path: req.url };
  res.writeHead(200, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
});
server.listen(port, "127.0.0.1", () => console.log(`hello-node listening on 127.0.0.1:${port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
