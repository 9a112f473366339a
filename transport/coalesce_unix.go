//go:build unix

package transport

import (
	"net"
	"os"
	"syscall"
)

// rawConnOf returns conn's raw connection, for writes that must not block;
// nil if it has none (a TLS connection from a custom dialer).
func rawConnOf(conn net.Conn) syscall.RawConn {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// rawWrite is the one attempt of tryWrite: write(2) on the non-blocking
// socket, which takes what fits in its buffer and no more.
func (c *coalescingConn) rawWrite(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), c.rawP)
		switch err {
		case syscall.EINTR:
			continue
		case nil:
			c.rawN, c.rawErr = n, nil
		case syscall.EAGAIN:
			c.rawN, c.rawErr = 0, nil
		default:
			c.rawN, c.rawErr = 0, os.NewSyscallError("write", err)
		}
		return true
	}
}
