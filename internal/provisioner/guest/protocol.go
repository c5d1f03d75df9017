// Package guest is what the provisioner and a VM's init agree on: the two channels a guest
// talks over (two virtio-serial ports under QEMU, two vsock ports under Firecracker) and the
// lines exchanged on them. The configuration channel hands the guest its configuration (runner
// token included) once; the log stream carries the guest's and the runner's output to the
// provisioner, which must acknowledge it before the guest may start the runner ("logs before
// work", issue #14). Both transports speak the same lines; only a vsock log stream can break
// and be resumed (LogResume).
package guest

import "time"

// Port names (virtserialport name=…): the guest finds them in /sys/class/virtio-ports/*/name.
const (
	TokenPort = "org.forgejo.token"
	LogPort   = "org.forgejo.log"
)

// Lines on the ports, each ended by "\n".
const (
	// TokenRequest is the guest's first line on the configuration channel, on both transports.
	// Under QEMU the provisioner writes the configuration only after reading it: the host end of
	// a virtio-serial port is connected before the guest runs, so the request is what says the
	// guest itself is at the other end. Under Firecracker a vsock connection exists only once the
	// guest made it, so the provisioner writes at once and reads the request only to close the
	// connection cleanly. Either way the channel is then closed for good.
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
	// LogResume starts a log stream again after it broke: "RESUME <vm id>", answered with
	// LogAck once the provisioner wrote a line for it to the VM's log, like the hello but without
	// reporting the log stream open a second time. Only a vsock stream breaks: when the
	// provisioner's end of a guest-initiated connection closes (the provisioner restarted),
	// Firecracker shuts the guest's end down. The init then holds every line back (the runner
	// blocks on its full output pipe, so it does no unrecorded work), dials again every
	// VsockRedial, sends RESUME and waits for LogAck (frp.ack_timeout; unanswered, it closes and
	// dials again), and writes the line whose write failed before any later one. Lines a write
	// had already handed to the sockets when the provisioner went away can be lost (at most what
	// the sockets' buffers and the exiting provisioner held); none is reordered. A virtio-serial port does
	// not break: while the host end is not connected the guest's writes wait, so it never
	// resumes.
	LogResume = "RESUME"
)

// Transports the init can talk over, chosen with ParamTransport.
const (
	// TransportVirtioSerial: the ports TokenPort and LogPort (QEMU); the default.
	TransportVirtioSerial = "virtio-serial"
	// TransportVsock: host CID VsockHostCID, ports VsockConfigPort and VsockLogPort
	// (Firecracker, which connects each to the Unix socket <uds_path>_<port> on the host).
	TransportVsock = "vsock"
)

// Vsock addresses: the guest dials the host; nothing listens in the guest.
const (
	VsockHostCID    = 2
	VsockConfigPort = 1024
	VsockLogPort    = 1025
	// VsockRedial is how long the init waits between two dials of a broken log stream.
	VsockRedial = time.Second
)

// Kernel command line parameters the init reads. None carries a secret: the command line is
// readable by every guest process and by the host's process list.
const (
	// ParamAddr is the guest's eth0 address, CIDR (default DefaultAddr), or AddrNone for a VM
	// without a network interface (Firecracker without a tap): the init then waits for no eth0.
	ParamAddr = "frp.addr"
	// ParamGateway is the default route's gateway (an IPv4 address on eth0's subnet, e.g. the
	// bridge's address with a tap per VM). Unset: no default route, the guest reaches only its
	// subnet (enough for a forwarded Forgejo address under QEMU user networking).
	ParamGateway = "frp.gw"
	// ParamAckTimeout bounds the wait for LogAck (a Go duration, default 2m).
	ParamAckTimeout = "frp.ack_timeout"
	// ParamRunner is the runner executable (default /usr/bin/forgejo-runner).
	ParamRunner = "frp.runner"
	// ParamModules is a comma-separated list of kernel module files to load first, in order.
	ParamModules = "frp.modules"
	// ParamProbe names comma-separated host:port addresses the init tries to reach and reports
	// on the log stream (a network isolation check for tests).
	ParamProbe = "frp.probe"
	// ParamTransport is TransportVirtioSerial (default) or TransportVsock.
	ParamTransport = "frp.transport"
)

// DefaultAddr is the guest's address under QEMU user networking (10.0.2.0/24).
const DefaultAddr = "10.0.2.15/24"

// AddrNone as ParamAddr: the VM has no network interface to configure.
const AddrNone = "none"
