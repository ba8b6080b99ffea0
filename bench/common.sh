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
