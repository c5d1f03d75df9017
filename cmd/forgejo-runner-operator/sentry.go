package main

import (
	"cmp"
	"fmt"
	"os"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/errreport"
)

// sentryDSNOrEnv is --sentry-dsn, else $SENTRY_DSN (the variable Sentry's SDKs read), so the DSN
// can come from a Secret through the environment rather than the command line.
func (o *options) sentryDSNOrEnv() string {
	return cmp.Or(o.sentryDSN, os.Getenv("SENTRY_DSN"))
}

func (o *options) validateSentry() error {
	dsn := o.sentryDSNOrEnv()
	if dsn == "" {
		return nil
	}
	if err := errreport.ValidateDSN(dsn); err != nil {
		return fmt.Errorf("--sentry-dsn or SENTRY_DSN: %w", err)
	}
	return nil
}

// errReport is the error reporter's configuration from the flags and the environment.
func (o *options) errReport() errreport.Options {
	return errreport.Options{
		DSN:         o.sentryDSNOrEnv(),
		Environment: cmp.Or(o.sentryEnvironment, os.Getenv("SENTRY_ENVIRONMENT")),
	}
}
