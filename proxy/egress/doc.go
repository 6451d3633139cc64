// Package egress is the data path every front end shares once a request is
// allowed: Dialer connects only to the addresses a policy.Decision pinned
// (never resolving a name), Relay carries a tunnel's bytes with splice(2)
// holding no pipe while the tunnel is idle, and Registry tracks live tunnels
// so a drain can wait for them and then cut them.
//
// It makes no policy choice: it is handed a decision, or bytes to move.
package egress
