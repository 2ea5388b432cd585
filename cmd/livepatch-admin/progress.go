package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressBar draws an upload's progress on one terminal line, at most 78 columns wide,
// redrawing only when the percentage changes.
type progressBar struct {
	w       io.Writer
	name    string
	total   int64
	percent int // last drawn, -1 before the first draw
}

func newProgressBar(w io.Writer, name string, total int64) *progressBar {
	const maxName = 26
	if len(name) > maxName {
		name = "..." + name[len(name)-maxName+3:]
	}
	return &progressBar{w: w, name: name, total: total, percent: -1}
}

// update draws the bar for sent bytes out of the total.
func (p *progressBar) update(sent, total int64) {
	if total <= 0 {
		return
	}
	percent := int(min(sent*100/total, 100))
	if percent == p.percent {
		return
	}
	p.percent = percent
	const width = 20
	filled := percent * width / 100
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	if filled > 0 && filled < width {
		bar = bar[:filled-1] + ">" + bar[filled:]
	}
	fmt.Fprintf(p.w, "\r%-26s [%s] %3d%% %10s / %10s", p.name, bar, percent, humanSize(sent), humanSize(total))
}

// done ends the bar's line.
func (p *progressBar) done() {
	if p.percent >= 0 {
		fmt.Fprintln(p.w)
	}
}
