package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
	"time"
)

// The SBOM is SPDX 2.3 JSON, one per platform image, attached to that image's manifest as an
// OCI 1.1 referrer (an artifact manifest whose subject is the image). Its content is what
// `go version -m` prints of the binary (module, dependencies with versions, toolchain and
// build settings) plus the CA bundle's Debian package, so it is exactly what was linked.
const (
	sbomMediaType = "application/spdx+json"
	spdxNoAssert  = "NOASSERTION"
)

type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	Name                  string            `json:"name"`
	SPDXID                string            `json:"SPDXID"`
	VersionInfo           string            `json:"versionInfo,omitempty"`
	DownloadLocation      string            `json:"downloadLocation"`
	FilesAnalyzed         bool              `json:"filesAnalyzed"`
	LicenseConcluded      string            `json:"licenseConcluded"`
	LicenseDeclared       string            `json:"licenseDeclared"`
	CopyrightText         string            `json:"copyrightText"`
	PrimaryPackagePurpose string            `json:"primaryPackagePurpose,omitempty"`
	Checksums             []spdxChecksum    `json:"checksums,omitempty"`
	ExternalRefs          []spdxExternalRef `json:"externalRefs,omitempty"`
	Comment               string            `json:"comment,omitempty"`
}

type spdxChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type spdxExternalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// sbomInput is what one platform's SBOM describes.
type sbomInput struct {
	binary    string // name, e.g. forgejo-runner-operator
	version   string
	platform  string // linux/amd64
	source    string
	license   string
	created   time.Time
	binData   []byte
	buildInfo *debug.BuildInfo
	caVersion string // Debian version of ca-certificates, or "" when unknown
}

func purl(typ, name, version string) spdxExternalRef {
	return spdxExternalRef{ReferenceCategory: "PACKAGE-MANAGER", ReferenceType: "purl",
		// purl percent-encodes the version: "+incompatible", Debian's "+deb12u1".
		ReferenceLocator: fmt.Sprintf("pkg:%s/%s@%s", typ, name, strings.ReplaceAll(version, "+", "%2B"))}
}

// buildSBOM renders the SPDX document; like the image, it depends only on its input.
func buildSBOM(in sbomInput) ([]byte, error) {
	sum := sha256.Sum256(in.binData)
	binSum := hex.EncodeToString(sum[:])
	bi := in.buildInfo
	var settings []string
	for _, s := range bi.Settings {
		settings = append(settings, s.Key+"="+s.Value)
	}
	doc := spdxDocument{
		SPDXVersion: "SPDX-2.3",
		DataLicense: "CC0-1.0",
		SPDXID:      "SPDXRef-DOCUMENT",
		Name:        fmt.Sprintf("%s-%s-%s", in.binary, in.version, strings.ReplaceAll(in.platform, "/", "-")),
		// Unique per binary content, and reproducible: no random UUID.
		DocumentNamespace: fmt.Sprintf("%s/spdx/%s/%s/sha256-%s", in.source, in.binary, in.platform, binSum),
		CreationInfo: spdxCreationInfo{
			Created:  in.created.UTC().Format(time.RFC3339),
			Creators: []string{"Tool: forgejo-runner-operator hack/images"},
		},
	}
	image := spdxPackage{
		Name: in.binary + "-image", SPDXID: "SPDXRef-Image", VersionInfo: in.version,
		DownloadLocation: spdxNoAssert, LicenseConcluded: spdxNoAssert, LicenseDeclared: spdxNoAssert,
		CopyrightText: spdxNoAssert, PrimaryPackagePurpose: "CONTAINER",
		Comment: "container image for " + in.platform,
	}
	app := spdxPackage{
		Name: bi.Main.Path, SPDXID: "SPDXRef-Binary", VersionInfo: in.version,
		DownloadLocation: in.source, LicenseConcluded: in.license, LicenseDeclared: in.license,
		CopyrightText: spdxNoAssert, PrimaryPackagePurpose: "APPLICATION",
		Checksums:    []spdxChecksum{{Algorithm: "SHA256", ChecksumValue: binSum}},
		ExternalRefs: []spdxExternalRef{purl("golang", bi.Main.Path, in.version)},
		Comment:      fmt.Sprintf("%s (%s), built by %s with %s", entrypoint(in.binary), bi.Path, bi.GoVersion, strings.Join(settings, " ")),
	}
	stdlib := spdxPackage{
		Name: "stdlib", SPDXID: "SPDXRef-Go-stdlib", VersionInfo: bi.GoVersion,
		DownloadLocation: spdxNoAssert, LicenseConcluded: spdxNoAssert, LicenseDeclared: "BSD-3-Clause",
		CopyrightText: spdxNoAssert, PrimaryPackagePurpose: "LIBRARY",
		ExternalRefs: []spdxExternalRef{purl("golang", "stdlib", bi.GoVersion)},
	}
	caVersion := in.caVersion
	if caVersion == "" {
		caVersion = spdxNoAssert
	}
	ca := spdxPackage{
		Name: "ca-certificates", SPDXID: "SPDXRef-CA-certificates", VersionInfo: caVersion,
		DownloadLocation: spdxNoAssert, LicenseConcluded: spdxNoAssert, LicenseDeclared: spdxNoAssert,
		CopyrightText: spdxNoAssert, PrimaryPackagePurpose: "FILE",
		Comment: caPath + ", copied from the build machine's Debian ca-certificates package",
	}
	if in.caVersion != "" {
		ca.ExternalRefs = []spdxExternalRef{purl("deb", "debian/ca-certificates", in.caVersion)}
	}
	doc.Packages = []spdxPackage{image, app, stdlib, ca}
	doc.Relationships = []spdxRelationship{
		{"SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image"},
		{"SPDXRef-Image", "CONTAINS", "SPDXRef-Binary"},
		{"SPDXRef-Image", "CONTAINS", "SPDXRef-CA-certificates"},
		{"SPDXRef-Binary", "STATIC_LINK", "SPDXRef-Go-stdlib"},
	}
	for i, dep := range bi.Deps {
		m := dep
		comment := ""
		if dep.Replace != nil {
			m = dep.Replace
			comment = fmt.Sprintf("replaces %s %s", dep.Path, dep.Version)
		}
		id := fmt.Sprintf("SPDXRef-Go-%d", i)
		p := spdxPackage{
			Name: m.Path, SPDXID: id, VersionInfo: m.Version,
			DownloadLocation: spdxNoAssert, LicenseConcluded: spdxNoAssert, LicenseDeclared: spdxNoAssert,
			CopyrightText: spdxNoAssert, PrimaryPackagePurpose: "LIBRARY",
			ExternalRefs: []spdxExternalRef{purl("golang", m.Path, m.Version)},
			Comment:      strings.TrimSpace(comment + " go.sum " + m.Sum),
		}
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, spdxRelationship{"SPDXRef-Binary", "STATIC_LINK", id})
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding SBOM: %w", err)
	}
	return append(out, '\n'), nil
}
