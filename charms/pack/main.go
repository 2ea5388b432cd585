// Command pack archives staged charm directories into .charm files and validates them and
// the bundle with github.com/juju/charm/v12. `make charms` runs it:
//
//	go run ./charms/pack -out build -bundle bundle/bundle.yaml -overlay bundle/local-overlay.yaml \
//	    -public bundle/testdata build/stage/livepatch build/stage/ubuntu-advantage
//
// Each staged directory holds dispatch, the YAML files, README.md and charmcraft.yaml; the
// archive is written to <out>/<charm name>.charm.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/juju/charm/v12"

	"github.com/livepatch-onprem/livepatch/charms"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "build", "directory for the .charm archives")
	bundle := flag.String("bundle", "", "bundle.yaml to verify with the built charms")
	overlay := flag.String("overlay", "", "overlay that points the bundle at the built charms")
	public := flag.String("public", "", "directory of metadata fixtures of the public charms (haproxy, postgresql)")
	flag.Parse()

	all := map[string]charm.Charm{}
	local := map[string]string{}
	for _, dir := range flag.Args() {
		cd, err := charm.ReadCharmDir(dir)
		if err != nil {
			return fmt.Errorf("cannot read charm %s: %w", dir, err)
		}
		name := cd.Meta().Name
		archive := filepath.Join(*out, name+".charm")
		if err := charms.Pack(dir, archive); err != nil {
			return err
		}
		ca, members, err := charms.Validate(archive)
		if err != nil {
			return err
		}
		if name == "livepatch" {
			if _, ok := members["bin/livepatch-server"]; !ok {
				fmt.Fprintf(os.Stderr, "warning: %s has no bin/livepatch-server (cmd/livepatch-server not built)\n", archive)
			}
		}
		fmt.Printf("packed and validated %s (%d members)\n", archive, len(members))
		all[name] = ca
		local[name] = archive
	}
	if *bundle == "" {
		return nil
	}
	if *public != "" {
		pub, err := charms.ReadPublicCharms(*public)
		if err != nil {
			return err
		}
		for name, ch := range pub {
			all[name] = ch
		}
		if err := charms.CheckPins(*bundle, pub); err != nil {
			return err
		}
	}
	if err := charms.VerifyBundle(*bundle, "", all, nil); err != nil {
		return err
	}
	fmt.Printf("verified %s\n", *bundle)
	if *overlay != "" {
		if err := charms.VerifyBundle(*bundle, *overlay, all, local); err != nil {
			return err
		}
		fmt.Printf("verified %s with %s\n", *bundle, *overlay)
	}
	return nil
}
