package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"
)

// show prints v as JSON or YAML, with the API's field names, or in the human form that
// human writes for --format table.
func (g *global) show(v any, human func(w io.Writer)) error {
	switch g.flagFormat {
	case formatJSON:
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("cannot encode output: %w", err)
		}
		_, err = fmt.Fprintf(g.stdout, "%s\n", data)
		return err
	case formatYAML:
		data, err := toYAML(v)
		if err != nil {
			return err
		}
		_, err = g.stdout.Write(data)
		return err
	}
	human(g.stdout)
	return nil
}

// toYAML renders v as YAML with exactly the keys, order and values of its JSON form (the
// API types carry JSON tags only): the JSON document is parsed as YAML, which it is, and
// re-emitted in block style.
func toYAML(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cannot encode output: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("cannot encode output: %w", err)
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("cannot encode output: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("cannot encode output: %w", err)
	}
	return buf.Bytes(), nil
}

// blockStyle drops the flow and quoting styles JSON syntax gave the nodes, so the encoder
// picks plain block style and quotes only strings that would otherwise read as another
// type (versions such as "107.1" stay strings).
func blockStyle(n *yaml.Node) {
	if len(n.Content) > 0 || n.Kind == yaml.ScalarNode {
		n.Style = 0
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// newTable returns a writer that aligns tab-separated columns; flush it at the end.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// orEmpty makes a nil list print as [] rather than null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// timeLayout is how tables show times, always in UTC; JSON and YAML carry RFC 3339.
const timeLayout = "2006-01-02 15:04"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(timeLayout)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// plural returns "1 file", "2 files".
func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// humanSize returns a size in B, KiB, MiB or GiB with one decimal.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 2; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMG"[exp])
}
