package main

import (
	"context"
	"io"
	"os"

	"github.com/heraldrt/herald/internal/bench"
)

// cmdBench implements `herald bench WORKLOAD [flags]`: the load generator
// of package internal/bench.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return bench.Run(ctx, args, os.Getenv, stdout, stderr)
}
