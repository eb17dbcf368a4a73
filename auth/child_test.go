package auth

import (
	"os"
	"os/exec"
	"syscall"
)

// childCommand runs the test binary bin as uid:gid, as a client of the
// socket at path.
func childCommand(bin, path string, uid, gid uint32) *exec.Cmd {
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childDialEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	return cmd
}
