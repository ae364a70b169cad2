# Sourced by scripts/bench-slack-acks.sh and scripts/symbol-order.sh: the throw-away world both
# run runbot in — a config with a SQLite store on disk, [slack] with secrets given by `file:`
# reference, one known identity, limits raised so that every command runs fully, the console
# off; Slack's side (the Web API and every response_url) at $2.
#
#   slack_world DIR SLACK_BASE PORT USER_ID     # writes DIR/{signing_secret,bot_token,runbot.toml}

slack_world() {
    local dir=$1 slack_base=$2 port=$3 user=$4
    python3 -c 'import secrets; print(secrets.token_hex(16))' > "$dir/signing_secret"
    echo "xoxb-bench-not-a-token" > "$dir/bot_token"
    chmod 600 "$dir/signing_secret" "$dir/bot_token"
    cat > "$dir/runbot.toml" <<TOML
[server]
listen = "127.0.0.1:$port"

[store]
url = "sqlite://$dir/runbot.db"

[engine]
instance = "bench"

[limits]
per_identity_per_minute = 100000000
per_channel_per_minute = 100000000

[groups]
sre = ["slack:$user"]

[console]
enabled = false

[slack]
bot_token = "file:$dir/bot_token"
signing_secret = "file:$dir/signing_secret"
api_url = "$slack_base/api"
TOML
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# wait_ready URL PID TRIES: polls URL until it answers 200, while PID lives (0.1 s apart).
wait_ready() {
    local url=$1 pid=$2 tries=$3
    for _ in $(seq "$tries"); do
        if python3 - "$url" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)
PY
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
