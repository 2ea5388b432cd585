// Command livepatch-charm is the dispatch binary of the livepatch charm: Juju runs it for
// every hook and action (JUJU_DISPATCH_PATH says which), and it configures the bundled
// livepatch-server. See charms/livepatch/README.md.
package main

import (
	"os"

	"github.com/livepatch-onprem/livepatch/actions"
	"github.com/livepatch-onprem/livepatch/hooks"
)

func main() {
	os.Exit(hooks.Main(actions.Charm()))
}
