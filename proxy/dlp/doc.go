// Package dlp is egressd's data-loss-prevention hook: it judges what a
// client sends in clear (forwarded absolute-URI requests now, inspected
// HTTPS requests later) before any byte of it goes upstream.
//
// It owns the Inspector interface and the Engine that runs a profile's
// chain (the built-in detectors, then the ICAP service), the built-in
// detectors (cloud and code-host credentials, private keys, card numbers,
// US SSNs, custom RE2 patterns) with their literal prefilter, request-body
// decoding (Content-Encoding gzip, deflate and br, urlencoded forms,
// multipart, JSON string escapes) with bounds on decoded size, the body
// holding that keeps nothing from leaving before a verdict, and the
// oversize policy (block, allow, or stream with the upload cut at a hit).
// The ICAP client (RFC 3507) lives in proxy/dlp/icap; this package adapts
// it as an Inspector and owns what its answers mean (dlp.icap.failure, the
// block page, a modification).
//
// Front ends call only Engine.Inspect and forward what the Outcome says;
// a new inspector never touches them. Findings name a detector and a
// location (URL, header name, body offset) and never carry the matched
// bytes, so nothing egressd writes can repeat a secret.
//
// The scanner is streaming and bounded: a prefilter finds candidates, the
// keyword automaton (Aho-Corasick over the detectors' literal prefixes)
// runs only around a keyword hit, and each detector's verifier looks at a
// bounded window around one candidate, so a match that spans two reads or
// two chunks is found exactly as in one buffer, in memory that does not
// grow with the body. The prefilter is the vector scan (vecscan.go: a
// Teddy-style keyword filter and digit-stretch masks, 32 bytes a step in
// AVX2 assembly) where the CPU has AVX2, BMI1 and BMI2 on amd64; elsewhere
// (other GOARCH, the purego tag, an older CPU) the portable samplers
// (sampled bigrams every third byte, sampled digits every 11th). Both find
// exactly what a brute-force scan finds (FuzzScanPaths, FuzzVecKernel).
package dlp
