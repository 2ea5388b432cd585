// Package layout holds no code: its test checks, against `go list`, the import rules that
// docs/architecture.md states, so that the map and the code do not drift apart.
package layout
