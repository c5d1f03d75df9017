package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
)

const auditUsage = `usage: ` + binaryName + ` audit verify [--min-records N] [--head HEX] FILE

Checks the hash chain of an audit log and prints the first problem in it.

  --min-records N  the log must reach at least seq N, e.g. the highest value
                   Prometheus saw of forgejo_runner_operator_audit_log_records
  --head HEX       the SHA-256 of a line the log must still hold, e.g. the head
                   printed by an earlier verify

Exit status: 0 the log is intact, 1 it is damaged, 2 usage error or unreadable file.
`

// runAudit runs `audit SUBCOMMAND ...` (args excludes "audit") and returns the exit status.
func runAudit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return auditUsageError(stderr, "no audit subcommand given")
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		_, _ = fmt.Fprint(stdout, auditUsage)
		return 0
	}
	return auditUsageError(stderr, fmt.Sprintf("unknown audit subcommand %q", args[0]))
}

func runAuditVerify(args []string, stdout, stderr io.Writer) int {
	var opts audit.VerifyOptions
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	// Parse errors are reported once, with the usage, below.
	fs.SetOutput(io.Discard)
	fs.Uint64Var(&opts.MinRecords, "min-records", 0, "")
	fs.StringVar(&opts.Head, "head", "", "")

	// flag stops at the first operand; parsing what follows it too lets flags come after FILE.
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				_, _ = fmt.Fprint(stdout, auditUsage)
				return 0
			}
			return auditUsageError(stderr, err.Error())
		}
		if fs.NArg() == 0 {
			break
		}
		if consumed := len(args) - fs.NArg(); consumed > 0 && args[consumed-1] == "--" {
			// After "--" everything is a FILE, even what looks like a flag.
			files = append(files, fs.Args()...)
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(files) != 1 {
		return auditUsageError(stderr, fmt.Sprintf("audit verify takes one FILE, got %d", len(files)))
	}
	path := files[0]

	f, err := os.Open(path)
	if err != nil {
		return auditUsageError(stderr, fmt.Sprintf("open audit log: %v", err))
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	rep, err := audit.Verify(f, opts)
	if err != nil {
		return auditUsageError(stderr, fmt.Sprintf("%s: %v", path, err))
	}
	if p := rep.Problem; p != nil {
		_, _ = fmt.Fprintf(stdout, "%s: %s\n", path, p.Message)
		return 1
	}
	if rep.Records == 0 {
		_, _ = fmt.Fprintf(stdout, "%s: ok: 0 records (empty log)\n", path)
		return 0
	}
	_, _ = fmt.Fprintf(stdout, "%s: ok: %d records, last seq %d, head %s\n", path, rep.Records, rep.LastSeq, rep.Head)
	return 0
}

func auditUsageError(stderr io.Writer, problem string) int {
	_, _ = fmt.Fprintf(stderr, "%s: %s\n\n%s", binaryName, problem, auditUsage)
	return 2
}
