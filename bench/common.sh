# Sourced by the bench scripts: what they share.

# write_origin_config FILE WORKDIR PORT1 PORT2
# The origin the comparisons proxy to: nginx, one worker in the foreground
# (no master), answering 200 "hello\n" on two loopback ports, its pid, log
# and temporary files under WORKDIR.
write_origin_config() {
  mkdir -p "$2/tmp"
  cat > "$1" <<NGINX
worker_processes 1; daemon off; master_process off; pid $2/origin.pid; error_log $2/origin.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  client_body_temp_path $2/tmp/body; proxy_temp_path $2/tmp/proxy; fastcgi_temp_path $2/tmp/fcgi;
  uwsgi_temp_path $2/tmp/uwsgi; scgi_temp_path $2/tmp/scgi;
  server { listen 127.0.0.1:$3; listen 127.0.0.1:$4; location / { return 200 "hello\n"; } } }
NGINX
}

# write_waygate_config FILE LISTEN ORIGIN1 ORIGIN2
# The bare waygate configuration the comparisons use: one listener, access
# log off, one route, round robin over two origins (like the peers' configs).
write_waygate_config() {
  cat > "$1" <<TOML
[[listener]]
name = "bench"
listen = "$2"

[access_log]
target = "off"

[[route]]
upstream = "origin"

[upstream.origin]
servers = ["$3", "$4"]
balance = "round_robin"
TOML
}

# add_waygate_features FILE ACCESS_LOG ADMIN_LISTEN
# Turns on, in a config written by write_waygate_config, what issue #4's
# "features" measurement adds (like waygate-cmd.sh's WAYGATE_FEATURES=1):
# the access log to a file, health checks every second, a rate-limit policy
# per client IP on the route (never reached) and the admin listener.
add_waygate_features() {
  sed -i -e "s|^target = \"off\"|target = \"$2\"|" \
    -e 's|^upstream = "origin"|upstream = "origin"\nrate_limit = "per_client"|' "$1"
  cat >> "$1" <<TOML

[upstream.origin.health_check]
interval = "1s"

[rate_limit.per_client]
rate = 10000000
per = "1s"
burst = 10000000
key = "client_ip"

[admin]
listen = "$3"
TOML
}
