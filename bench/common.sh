# Sourced by the bench scripts: what they share.

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
