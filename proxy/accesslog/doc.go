// Package accesslog owns the one terminal event of every request or tunnel:
// the JSON access-log line on stdout and the Prometheus updates made from the
// same Record, so logs and metrics cannot disagree. An Observer (the admin
// status page) is told of the same finished record. With log.tunnel_open a
// tunnel also writes a line when it is established (Record.Opened, event
// "open"); its end line (event "close") is still the one terminal event.
//
// It does not decide anything and does not know about protocols: front ends
// fill a Record as the exchange progresses and call Finish exactly once
// (further calls are no-ops).
package accesslog
