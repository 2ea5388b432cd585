package main

import (
	"context"
	"flag"
	"io"

	"github.com/livepatch-onprem/livepatch/server/app"
	"github.com/livepatch-onprem/livepatch/server/config"
)

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := fs.String("config", "", "server config file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *configPath == "" {
		return usageError{"serve needs --config FILE"}
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	m := &app.Main{Config: cfg, Logger: app.NewLogger(stderr, cfg.Server.LogLevel), Version: version}
	return m.Run(ctx)
}
