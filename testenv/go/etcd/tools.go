//go:build tools

// Package tools pins the commands testenv/build.sh builds; see versions.env.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
