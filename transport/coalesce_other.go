//go:build !unix

package transport

import (
	"net"
	"syscall"
)

// rawConnOf returns nil: without non-blocking writes, every request goes
// through the flusher with write coalescing on, so that no caller blocks on
// a peer that stops reading; with it off, requests are written inline and
// block, as net/rpc's do.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func (c *coalescingConn) rawWrite(uintptr) bool { return true }
