package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// databaseURL picks the DSN from --db, else the config file, else the environment.
func databaseURL(dsn, configPath string) (string, error) {
	switch {
	case dsn != "" && configPath != "":
		return "", usageError{"give --db or --config, not both"}
	case dsn != "":
		return dsn, nil
	case configPath != "":
		c, err := config.Load(configPath)
		if err != nil {
			return "", err
		}
		if c.Database.ConnectionString == "" {
			return "", fmt.Errorf("%s has no database.connection-string", configPath)
		}
		return c.Database.ConnectionString, nil
	case os.Getenv("LIVEPATCH_DATABASE_URL") != "":
		return os.Getenv("LIVEPATCH_DATABASE_URL"), nil
	}
	return "", usageError{"no database: give --config FILE or --db DSN (or set LIVEPATCH_DATABASE_URL)"}
}

func cmdSchema(ctx context.Context, sub string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("schema "+sub, flag.ContinueOnError)
	dsn := fs.String("db", "", "database connection string")
	configPath := fs.String("config", "", "server config file holding database.connection-string")
	format := "text"
	if sub == "upgrade" || sub == "version" {
		fs.StringVar(&format, "format", "text", "output format: text or json")
	}
	switch sub {
	case "upgrade", "check", "version":
	default:
		return usageError{fmt.Sprintf("unknown schema subcommand %q (want upgrade, check or version)", sub)}
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if format != "text" && format != "json" {
		return usageError{fmt.Sprintf("unknown format %q (want text or json)", format)}
	}
	url, err := databaseURL(*dsn, *configPath)
	if err != nil {
		return err
	}
	db, err := postgres.Open(ctx, url, postgres.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	defer db.Close()

	switch sub {
	case "upgrade":
		from, to, err := db.Migrate(ctx)
		if err != nil {
			return err
		}
		if format == "json" {
			return json.NewEncoder(stdout).Encode(map[string]int{"from": from, "to": to})
		}
		if from == to {
			fmt.Fprintf(stdout, "schema is current at version %d\n", to)
		} else {
			fmt.Fprintf(stdout, "schema upgraded from version %d to %d\n", from, to)
		}
		return nil
	case "check":
		current, latest, err := db.SchemaVersion(ctx)
		if err != nil {
			return err
		}
		switch {
		case current == 0:
			fmt.Fprintln(stdout, "database not initialized")
			return exitCode(2)
		case current < latest:
			fmt.Fprintf(stdout, "schema upgrade required: current %d, latest %d\n", current, latest)
			return exitCode(2)
		}
		fmt.Fprintf(stdout, "schema is current at version %d\n", current)
		return nil
	default: // version
		current, latest, err := db.SchemaVersion(ctx)
		if err != nil {
			return err
		}
		if format == "json" {
			return json.NewEncoder(stdout).Encode(map[string]int{"current": current, "latest": latest})
		}
		fmt.Fprintf(stdout, "current: %d\nlatest: %d\n", current, latest)
		return nil
	}
}
