//go:build tools

// Package tools pins the commands testenv/build.sh builds; see versions.env.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
	_ "sigs.k8s.io/kwok/cmd/kwokctl"
)
