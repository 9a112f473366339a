package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent asks the kernel to kill the server process when the harness
// dies, so that not even a SIGKILL of the harness leaves it behind.
func dieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
