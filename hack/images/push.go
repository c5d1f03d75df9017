package main

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Pushed is what Push wrote for one layout.
type Pushed struct {
	Ref      name.Tag
	Index    v1.Hash
	Referrer []v1.Hash
}

// Push copies a layout written by Build to repo (e.g. registry.example.com/forgejo-runner-operator):
// its tagged index under the tag it carries, then each referrer by digest, after the image it
// refers to. Credentials come from the usual docker/podman config files.
func Push(ctx context.Context, layoutDir, repo string, nameOpts ...name.Option) (Pushed, error) {
	var out Pushed
	r, err := name.NewRepository(repo, nameOpts...)
	if err != nil {
		return out, fmt.Errorf("repository %q: %w", repo, err)
	}
	p, err := layout.FromPath(layoutDir)
	if err != nil {
		return out, fmt.Errorf("opening %s (run make images first): %w", layoutDir, err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		return out, fmt.Errorf("reading %s: %w", layoutDir, err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		return out, fmt.Errorf("reading %s/index.json: %w", layoutDir, err)
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	var referrers []v1.Descriptor
	for _, d := range im.Manifests {
		switch {
		case d.MediaType == types.OCIImageIndex && d.Annotations[annRefName] != "":
			if out.Ref.TagStr() != "" {
				return out, fmt.Errorf("%s holds more than one tagged index", layoutDir)
			}
			idx, err := top.ImageIndex(d.Digest)
			if err != nil {
				return out, fmt.Errorf("reading index %s: %w", d.Digest, err)
			}
			out.Ref = r.Tag(d.Annotations[annRefName])
			if err := remote.WriteIndex(out.Ref, idx, opts...); err != nil {
				return out, fmt.Errorf("pushing %s: %w", out.Ref, err)
			}
			out.Index = d.Digest
		case d.MediaType == types.OCIManifestSchema1:
			referrers = append(referrers, d)
		default:
			return out, fmt.Errorf("%s: unexpected %s %s in index.json", layoutDir, d.MediaType, d.Digest)
		}
	}
	if out.Ref.TagStr() == "" {
		return out, fmt.Errorf("%s holds no tagged index", layoutDir)
	}
	for _, d := range referrers {
		img, err := top.Image(d.Digest)
		if err != nil {
			return out, fmt.Errorf("reading %s: %w", d.Digest, err)
		}
		if err := remote.Write(r.Digest(d.Digest.String()), img, opts...); err != nil {
			return out, fmt.Errorf("pushing referrer %s: %w", d.Digest, err)
		}
		out.Referrer = append(out.Referrer, d.Digest)
	}
	return out, nil
}
