package overlay

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestCreateIsAPrivateCopy(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.ext4")
	content := append(bytes.Repeat([]byte{0}, 3<<20), []byte("data after a hole")...)
	if err := os.WriteFile(base, content, 0o444); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "vm", "rootfs.ext4")
	if err := os.Mkdir(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	method, err := Create(base, dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("overlay made by %s", method)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("overlay differs from the base (%d bytes, want %d)", len(got), len(content))
	}
	info, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("overlay mode %o, want 600", perm)
	}

	// A guest's writes stay in its overlay.
	if err := os.WriteFile(dst, []byte("guest wrote this"), 0o600); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, content) {
		t.Fatal("writing the overlay changed the base image")
	}

	if _, err := Create(base, dst); err == nil {
		t.Fatal("Create over an existing overlay succeeded; it must refuse")
	}
}
