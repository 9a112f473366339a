//go:build unix

package transport

import (
	"net"
	"os"
	"syscall"
)

// rawConnOf returns conn's raw connection, for writes that must not block;
// nil unless conn is the socket itself. A custom dialer's connection that
// embeds one (to encrypt, compress or count) has a raw connection too, but
// writing to it would go around the wrapper's Write.
func rawConnOf(conn net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := conn.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
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
