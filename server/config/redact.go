package config

import (
	"regexp"
	"strings"
)

// redactedPassword replaces the password of a URL's userinfo, as url.URL.Redacted does.
const redactedPassword = "xxxxx"

var (
	// schemeUserinfo matches "scheme://userinfo@" anywhere in a text.
	schemeUserinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@\s"'<>\\]*)@`)
	// bareUserinfo matches "user:password@host" without a scheme (a proxy given as
	// host:port) at the start of a text or after a space, quote or "=".
	bareUserinfo = regexp.MustCompile(`(^|[\s"'=(])([^\s"'=(/@:]+):([^\s"'/@]+)@`)
)

// Redact returns text with the credentials of every URL in it replaced: the password of
// "user:password@" becomes xxxxx, and a userinfo without a password (often a token, as in
// https://TOKEN@host) becomes xxxxx entirely. Config errors, statuses, reports and logs
// that may quote a URL (a proxy, an upstream, a contracts server) pass through it, so that
// no credential reaches a message.
func Redact(text string) string {
	if !strings.Contains(text, "@") {
		return text
	}
	text = schemeUserinfo.ReplaceAllStringFunc(text, func(m string) string {
		sub := schemeUserinfo.FindStringSubmatch(m)
		scheme, info := sub[1], sub[2]
		if user, _, ok := strings.Cut(info, ":"); ok {
			return scheme + user + ":" + redactedPassword + "@"
		}
		return scheme + redactedPassword + "@"
	})
	return bareUserinfo.ReplaceAllString(text, "${1}${2}:"+redactedPassword+"@")
}
