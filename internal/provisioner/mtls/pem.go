package mtls

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// parsePEMCerts parses the next PEM block of rest as certificates.
func parsePEMCerts(rest []byte) (certs []*x509.Certificate, remaining []byte, err error) {
	block, remaining := pem.Decode(rest)
	if block == nil {
		if len(trimSpace(rest)) == 0 {
			return nil, nil, nil
		}
		return nil, nil, errors.New("not PEM")
	}
	if block.Type != "CERTIFICATE" {
		return nil, remaining, nil
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate: %w", err)
	}
	return []*x509.Certificate{c}, remaining, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
