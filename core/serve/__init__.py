"""`ahead serve`: the engine plus an SSH server that gives each operator the console.

Modules: keys (public key parsing without asyncssh, host and demo key files), guard (who may
log in: lockout and per-address caps kept in the store), presence (who is connected, in the
store), server (the asyncssh server and its sessions), zygote (the client side of the
pre-imported fork server that starts console processes). Only `server` imports asyncssh at
module level; core/workspace.py uses `keys` to validate operators' keys without it.
"""
