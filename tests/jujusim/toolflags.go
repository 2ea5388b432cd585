package jujusim

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v2"
)

// usageError is an argument or flag error: exit code 2, as juju/cmd's Init errors.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// flagSet parses flags the way juju/gnuflag does: GNU style, interspersed with positional
// arguments, "--" ends flags, --flag=value and --flag value, bools accept =true/false/1/0.
type flagSet struct {
	bools   map[string]*bool
	strs    map[string]*string
	set     map[string]bool
	aliases map[string]string
}

func newFlagSet() *flagSet {
	return &flagSet{bools: map[string]*bool{}, strs: map[string]*string{}, set: map[string]bool{}, aliases: map[string]string{}}
}

func (f *flagSet) Bool(p *bool, name string, aliases ...string) {
	f.bools[name] = p
	for _, a := range aliases {
		f.aliases[a] = name
	}
}

func (f *flagSet) String(p *string, name string, aliases ...string) {
	f.strs[name] = p
	for _, a := range aliases {
		f.aliases[a] = name
	}
}

func (f *flagSet) canon(name string) string {
	if c, ok := f.aliases[name]; ok {
		return c
	}
	return name
}

// parse returns the positional arguments.
func (f *flagSet) parse(args []string) ([]string, error) {
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if n, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = n, v, true
		}
		short := !strings.HasPrefix(a, "--")
		if short && len(name) > 1 && !hasValue {
			// -rdb:1 is -r db:1
			if _, ok := f.strs[f.canon(name[:1])]; ok {
				name, value, hasValue = name[:1], name[1:], true
			}
		}
		name = f.canon(name)
		if p, ok := f.bools[name]; ok {
			v := true
			if hasValue {
				switch value {
				case "true", "True", "TRUE", "1", "t", "T":
				case "false", "False", "FALSE", "0", "f", "F":
					v = false
				default:
					return nil, usagef("invalid value %q for flag %s: parse error", value, a)
				}
			}
			*p = v
			f.set[name] = true
			continue
		}
		if p, ok := f.strs[name]; ok {
			if !hasValue {
				if i+1 >= len(args) {
					return nil, usagef("flag needs an argument: %s", a)
				}
				i++
				value = args[i]
			}
			*p = value
			f.set[name] = true
			continue
		}
		if name == "help" || name == "h" {
			return nil, errHelp
		}
		return nil, usagef("flag provided but not defined: %s", a)
	}
	return pos, nil
}

var errHelp = errors.New("help requested")

// formatOutput renders v as juju/cmd's formatters do.
func formatOutput(format string, v any) ([]byte, error) {
	switch format {
	case "", "smart":
		switch x := v.(type) {
		case nil:
			return nil, nil
		case string:
			if x == "" {
				return nil, nil
			}
			return []byte(x + "\n"), nil
		case []string:
			if len(x) == 0 {
				return nil, nil
			}
			return []byte(strings.Join(x, "\n") + "\n"), nil
		case bool:
			if x {
				return []byte("True\n"), nil
			}
			return []byte("False\n"), nil
		}
		return formatOutput("yaml", v)
	case "yaml":
		if v == nil {
			return nil, nil
		}
		b, err := yaml.Marshal(v)
		if err != nil {
			return nil, err
		}
		return []byte(strings.TrimRight(string(b), "\n") + "\n"), nil
	case "json":
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	}
	return nil, usagef("invalid value %q for option --format: unknown format %q", format, format)
}

// parseKeyValues parses key=value arguments as juju/utils keyvalues.Parse(args, true).
func parseKeyValues(args []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usagef("expected \"key=value\", got %q", a)
		}
		if _, dup := out[k]; dup {
			return nil, usagef("key %q specified more than once", k)
		}
		out[k] = v
	}
	return out, nil
}

func sortedStrings(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
