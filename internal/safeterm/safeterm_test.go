package safeterm_test

import (
	"bytes"
	"testing"

	"github.com/livepatch-onprem/livepatch/internal/safeterm"
)

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"plain text\twith tab\n":       "plain text\twith tab\n",
		"\x1b]0;pwned\x07title":        `\x1b]0;pwned\x07title`,
		"red \x1b[31mtext\x1b[0m":      `red \x1b[31mtext\x1b[0m`,
		"back\rover":                   `back\x0dover`,
		"c1 \u009b2J csi":              `c1 \u009b2J csi`,
		"ünïcödé stays, 中文 too":        "ünïcödé stays, 中文 too",
		"del\x7f":                      `del\x7f`,
		"invalid \xff byte is no rune": "invalid \ufffd byte is no rune",
	} {
		if got := safeterm.String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriterSplitRunes(t *testing.T) {
	var buf bytes.Buffer
	w := safeterm.NewWriter(&buf)
	in := []byte("é\u009b中\x1b")
	for i := range in {
		if _, err := w.Write(in[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := buf.String(), `é\u009b中\x1b`; got != want {
		t.Errorf("byte-by-byte writes = %q, want %q", got, want)
	}
}
