package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"github.com/agentmeter/agentmeter/config"
)

// SocketMode is the permission of the Unix socket: owner and group may
// connect (write), others may not.
const SocketMode fs.FileMode = 0o660

// Listen opens the listener of a receiver.grpc.endpoint: TCP for
// host:port, a Unix socket for unix:///path. network is ignored (the
// endpoint says it); the signature is grpcserver's Deps.Listen.
//
// A socket gets mode 0660 (SocketMode), so only the collector's user and
// group may connect: share it through a volume with the agent container
// running in that group (a Pod's fsGroup). A socket file left by a process
// that died is removed first; one that a live process answers on is not
// (an error). Closing the listener removes the file.
func Listen(_, endpoint string) (net.Listener, error) {
	path, ok := config.SocketPath(endpoint)
	if !ok {
		return net.Listen("tcp", endpoint)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, SocketMode); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("set the mode of socket %q: %w", path, err)
	}
	return ln, nil
}

// removeStale removes a socket file nobody listens on. Anything else at
// path is left alone.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%q exists and is not a socket: remove it or choose another path", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = conn.Close()
		return fmt.Errorf("socket %q is in use by another process", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %q: %w", path, err)
	}
	return nil
}
