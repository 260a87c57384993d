package restproxy

import (
	"strconv"
	"strings"
)

// knownMethods are the methods Discord's API serves.
var knownMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true}

// checkRequestTarget refuses what must never be forwarded: absolute URLs, traversal and encoded
// separators in the path, control characters. raw is the request target as sent. It returns a message
// for the caller, or "".
func checkRequestTarget(raw string) string {
	if raw == "" || raw[0] != '/' {
		return "send the path only (\"/api/v10/...\"), not an absolute URL"
	}
	path, _, _ := strings.Cut(raw, "?")
	lower := strings.ToLower(path)
	for _, bad := range [...]string{"%2e", "%2f", "%5c", "%25", "%00", "\\"} {
		if strings.Contains(lower, bad) {
			return "the path contains an encoded dot, slash, backslash, percent or NUL (" + bad + "): not forwarded"
		}
	}
	for i := 0; i < len(path); i++ {
		if c := path[i]; c < 0x20 || c == 0x7f {
			return "the path contains a control character: not forwarded"
		}
	}
	for seg := range strings.SplitSeq(path[1:], "/") {
		if seg == "." || seg == ".." {
			return "the path contains a \".\" or \"..\" segment: not forwarded"
		}
	}
	// Empty segments ("//") are no traversal and some libraries send them (discordgo's voice regions):
	// Discord judges them.
	return ""
}

// headerProblem reports a header that must not be forwarded (CR, LF or NUL in a value; the HTTP server
// refuses most of these before dd sees them).
func headerProblem(h map[string][]string) string {
	for k, vs := range h {
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				return "header " + k + " contains CR, LF or NUL: not forwarded"
			}
		}
	}
	return ""
}

// splitVersion strips the API prefix: "/api/v{N}/...", "/v{N}/..." (Discordeno's proxy clients) or
// "/api/..." (version def). It returns the version and the rest of the path ("/channels/...").
func splitVersion(path string, def int) (int, string, bool) {
	rest, api := strings.CutPrefix(path, "/api")
	if api && (rest == "" || rest[0] != '/') {
		return 0, "", false
	}
	version := def
	if len(rest) > 2 && rest[1] == 'v' && rest[2] >= '0' && rest[2] <= '9' {
		v, tail, _ := strings.Cut(rest[2:], "/")
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 99 {
			return 0, "", false
		}
		version, rest = n, "/"+tail
	} else if !api {
		return 0, "", false
	}
	if len(rest) < 2 {
		return 0, "", false
	}
	return version, rest, true
}

// dropRequestHeaders are not forwarded to Discord: hop-by-hop headers, what dd sets itself, and what
// would only leak the caller's network to Discord.
var dropRequestHeaders = map[string]bool{
	"Authorization": true, "Host": true, "Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Upgrade": true, "Content-Length": true, "User-Agent": true, "Expect": true, "Cookie": true,
	"X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true, "Forwarded": true, "X-Real-Ip": true,
	"X-Dd-Forwarded": true, // HopHeader, between dd processes only
}

// dropResponseHeaders are hop-by-hop headers of Discord's answer.
var dropResponseHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Connection": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}
