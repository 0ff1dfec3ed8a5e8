"""`ahead serve`: the engine plus an SSH server that gives each operator the console.

Modules: keys (public key parsing without asyncssh, host and operator key files), guard
(failed-login lockout kept in the store), presence (who is connected, in the store; local
consoles use it too), server (the asyncssh server: authentication and limits), session (one
session channel: the console on its own PTY, or a read-only listing), listing (the listings an
SSH client may run), zygote (the client side of the pre-imported fork server that starts
console processes; the fork server itself is tui/zygote.py). Only server and session import
asyncssh at module level; core/workspace.py validates operators' keys through `keys` without it.
"""
