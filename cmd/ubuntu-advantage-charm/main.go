// Command ubuntu-advantage-charm is the dispatch binary of the ubuntu-advantage subordinate
// charm: it attaches the machine to Ubuntu Pro. See charms/ubuntu-advantage/README.md.
package main

import (
	"os"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/ubuntuadvantage"
)

func main() {
	os.Exit(hooks.Main(ubuntuadvantage.Charm()))
}
