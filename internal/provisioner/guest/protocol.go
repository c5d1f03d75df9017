// Package guest is what the provisioner and a VM's init agree on: the names of the two
// virtio-serial ports a QEMU guest talks over and the lines exchanged on them. The token port
// hands the guest its configuration (runner token included) once; the log port carries the
// guest's and the runner's output to the provisioner, which must acknowledge it before the guest
// may start the runner ("logs before work", issue #14).
package guest

// Port names (virtserialport name=…): the guest finds them in /sys/class/virtio-ports/*/name.
const (
	TokenPort = "org.forgejo.token"
	LogPort   = "org.forgejo.log"
)

// Lines on the ports, each ended by "\n".
const (
	// TokenRequest is the guest's first line on the token port. The provisioner writes the
	// configuration only after reading it, so it is sure the guest itself is at the other end,
	// then closes the port for good.
	TokenRequest = "GET"
	// LogHello starts the guest's log stream: "HELLO <vm id>".
	LogHello = "HELLO"
	// LogAck is the provisioner's answer once the hello was written to the VM's log: the sink
	// works, so the runner's output will be kept. Without it the guest never starts the runner.
	LogAck = "ACK"
	// LogEvent starts a line the init writes at a milestone the provisioner records (figures and
	// the event log): "EVENT runner-started" once the runner process started, "EVENT
	// runner-exited <code>" when it ended. The runner's own output reaches the port prefixed
	// "runner: ", so it cannot be taken for one.
	LogEvent           = "EVENT"
	EventRunnerStarted = "runner-started"
	EventRunnerExited  = "runner-exited"
)

// Kernel command line parameters the init reads. None carries a secret: the command line is
// readable by every guest process and by the host's process list.
const (
	// ParamAddr is the guest's eth0 address, CIDR (default DefaultAddr).
	ParamAddr = "frp.addr"
	// ParamAckTimeout bounds the wait for LogAck (a Go duration, default 2m).
	ParamAckTimeout = "frp.ack_timeout"
	// ParamRunner is the runner executable (default /usr/bin/forgejo-runner).
	ParamRunner = "frp.runner"
	// ParamModules is a comma-separated list of kernel module files to load first, in order.
	ParamModules = "frp.modules"
	// ParamProbe names comma-separated host:port addresses the init tries to reach and reports
	// on the log stream (a network isolation check for tests).
	ParamProbe = "frp.probe"
)

// DefaultAddr is the guest's address under QEMU user networking (10.0.2.0/24).
const DefaultAddr = "10.0.2.15/24"
