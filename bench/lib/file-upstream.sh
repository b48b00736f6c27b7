# Sourced by the router benches that take the upstream out of the way
# (router-rss.sh, router-cpu.sh): installs wrk and nginx if missing, builds
# router/examples/many_apps, makes $work (removed on exit, with every
# process started), defines free_port, and starts the upstream — one nginx
# worker serving a small file — on $UP_PORT.
for tool in wrk nginx; do
  command -v $tool >/dev/null || { echo "installing $tool (apt)"; apt-get install -y -q wrk nginx-light >/dev/null; }
done
cargo build --release --quiet -p bifrost-router --example many_apps
work=$(mktemp -d)
chmod 755 "$work"  # nginx workers (www-data) read the upstream's file
# (Every kill may fail — a job already gone — and must not end the trap
# under `set -e` before the nginx masters are stopped.)
cleanup() { kill $(jobs -p) 2>/dev/null || true; for p in "$work"/*.pid; do kill $(tr , ' ' < "$p") 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

UP_PORT=$(free_port)
mkdir -p "$work/www" && echo "hello from the upstream" > "$work/www/index.html"
cat > "$work/upstream.conf" <<NGINX
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP_PORT; root $work/www; } }
NGINX
nginx -c "$work/upstream.conf" -p "$work"
