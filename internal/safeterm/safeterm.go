// Package safeterm keeps text that comes from elsewhere (a server's answer, a patch's
// metadata, an upstream's message) from driving the terminal it is printed on: control
// characters other than newline and tab (ESC, which starts terminal escape sequences, among
// them) and the C1 controls are shown as visible escapes instead.
package safeterm

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// String returns s with its control characters, other than newline and tab, escaped, and
// invalid UTF-8 replaced.
func String(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		writeRune(&b, r)
	}
	return b.String()
}

func needsEscape(s string) bool {
	if !utf8.ValidString(s) {
		return true // invalid bytes become U+FFFD
	}
	for _, r := range s {
		if isControl(r) {
			return true
		}
	}
	return false
}

func isControl(r rune) bool {
	return (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f)
}

func writeRune(b *strings.Builder, r rune) {
	switch {
	case r < 0x80 && isControl(r):
		fmt.Fprintf(b, `\x%02x`, r)
	case isControl(r):
		fmt.Fprintf(b, `\u%04x`, r)
	default:
		b.WriteRune(r)
	}
}

// NewWriter returns a writer that escapes, as String does, what it writes to w. A rune
// split across writes is kept until it is complete.
func NewWriter(w io.Writer) io.Writer { return &writer{w: w} }

type writer struct {
	w       io.Writer
	pending []byte // the start of a UTF-8 sequence cut by the end of the last write
}

func (t *writer) Write(p []byte) (int, error) {
	data := append(t.pending, p...)
	cut := len(data)
	// Keep an incomplete rune at the end for the next write.
	for i := max(0, len(data)-utf8.UTFMax+1); i < len(data); i++ {
		if utf8.RuneStart(data[i]) && !utf8.FullRune(data[i:]) {
			cut = i
			break
		}
	}
	t.pending = append([]byte(nil), data[cut:]...)
	if _, err := io.WriteString(t.w, String(string(data[:cut]))); err != nil {
		return 0, err
	}
	return len(p), nil
}
