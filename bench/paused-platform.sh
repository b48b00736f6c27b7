# Sourced by benchmarks: starts a release `bifrost up --paused` on free
# loopback ports in a temporary directory (removed on exit), and an empty git
# repository to make projects from. Sets: work, TOKEN, pid, url, addr, repo.
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
TOKEN=bft_bench-admin-token
BIFROST_ADMIN_TOKEN=$TOKEN BIFROST_CONFIG_DIR=$work/cfg BIFROST_LOG=warn \
  target/release/bifrost up --paused --listen 127.0.0.1:0 --ingest-listen 127.0.0.1:0 --data-dir "$work/data" \
  > "$work/up.out" 2> "$work/up.err" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/up.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^bifrost: listening on //p' "$work/up.out")
[ -n "$url" ] || { echo "bifrost up did not start:" >&2; cat "$work/up.err" >&2; exit 1; }
addr=${url#http://}
repo=$work/repo
git init -q -b main "$repo" && git -C "$repo" -c user.email=b@b -c user.name=b commit -q --allow-empty -m x
