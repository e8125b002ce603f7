//go:build tools

// Package tools pins the commands testenv/build.sh builds; see versions.env.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
