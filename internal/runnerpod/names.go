package runnerpod

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// secretSuffix marks the Secret that holds a runner's token.
const secretSuffix = "-token"

// nameHashLen is how many hex digits of a name's SHA-256 a shortened name keeps: 40 bits, so two
// long names that share their first 50-odd characters still get distinct short forms.
const nameHashLen = 10

// PodName is the name of the pod that runs runner. It is the runner's own name when that is a
// DNS label (at most 63 characters, no dots), because the pod's hostname is taken from it and
// kubelet would otherwise cut it; longer names are shortened with a hash of the full name.
func PodName(runner *v1alpha1.Runner) string {
	return dnsLabel(runner.Name)
}

// SecretName is the name of the Secret holding runner's Forgejo token: "<runner>-token",
// shortened with a hash of the runner's name when that would exceed a DNS subdomain's 253
// characters.
func SecretName(runner *v1alpha1.Runner) string {
	name := runner.Name + secretSuffix
	if len(validation.IsDNS1123Subdomain(name)) == 0 {
		return name
	}
	return shorten(runner.Name, secretSuffix, validation.DNS1123SubdomainMaxLength, false)
}

// LabelValue is how a name (a pool's or a runner's, up to 253 characters) is written in a label
// value, which allows only 63: unchanged when it fits, otherwise shortened with a hash of the
// whole name. Selectors must use the same function to find what the builders labelled.
func LabelValue(name string) string {
	if len(validation.IsValidLabelValue(name)) == 0 {
		return name
	}
	return shorten(name, "", validation.LabelValueMaxLength, true)
}

// dnsLabel returns name when it is a DNS-1123 label and a shortened, hashed form otherwise.
func dnsLabel(name string) string {
	if len(validation.IsDNS1123Label(name)) == 0 {
		return name
	}
	return shorten(name, "", validation.DNS1123LabelMaxLength, true)
}

// shorten builds "<prefix of name>-<hash of name><suffix>" of at most maxLen characters. The hash
// is of the full original name, so distinct inputs stay distinct after truncation. With noDots,
// dots become dashes so the result is also a DNS label and a label value.
func shorten(name, suffix string, maxLen int, noDots bool) string {
	sum := sha256.Sum256([]byte(name))
	hash := hex.EncodeToString(sum[:])[:nameHashLen]

	prefix := strings.ToLower(name)
	if noDots {
		prefix = strings.ReplaceAll(prefix, ".", "-")
	}
	keep := maxLen - len(suffix) - len(hash) - 1
	if len(prefix) > keep {
		prefix = prefix[:keep]
	}
	// A part of a DNS name must end with an alphanumeric character, and a prefix cut at an
	// arbitrary point may end with '-' or '.'; an all-punctuation prefix is dropped entirely.
	prefix = strings.TrimRight(prefix, "-.")
	if prefix == "" {
		return hash + suffix
	}
	return prefix + "-" + hash + suffix
}
