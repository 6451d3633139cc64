// Package sni reads the server name from a TLS ClientHello without
// consuming it: Peek returns every byte it read so the caller can replay them
// to the origin. It is pure parsing (and one bounded read loop); it knows
// nothing about policy.
package sni
