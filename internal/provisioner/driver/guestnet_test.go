package driver_test

import (
	"strings"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
)

func TestGuestNetwork(t *testing.T) {
	n, err := driver.ParseGuestNetwork("172.30.0.7/24")
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Gateway().String(); got != "172.30.0.1" {
		t.Errorf("gateway %s", got)
	}
	if n.Slots() != 245 {
		t.Errorf("slots %d, want 245 (.10 to .254)", n.Slots())
	}
	for slot, want := range map[int]string{0: "frp.addr=172.30.0.10/24 frp.gw=172.30.0.1", 244: "frp.addr=172.30.0.254/24 frp.gw=172.30.0.1"} {
		if got, err := n.BootArgs(slot); err != nil || got != want {
			t.Errorf("slot %d: %q, %v; want %q", slot, got, err, want)
		}
	}
	if _, err := n.BootArgs(245); err == nil {
		t.Error("slot 245 would be the broadcast address")
	}
	wide, _ := driver.ParseGuestNetwork("10.200.0.0/16")
	if a, _ := wide.Addr(300); a.String() != "10.200.1.54/16" {
		t.Errorf("slot 300 of a /16: %s", a)
	}
	for _, bad := range []string{"172.30.0.0/29", "fd00::/64", "nonsense"} {
		if _, err := driver.ParseGuestNetwork(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidIDAndMAC(t *testing.T) {
	for id, ok := range map[string]bool{"vm-0a1b": true, "": false, "../etc": false, "VM-1": false, "vm 1": false, strings.Repeat("a", 65): false} {
		if err := driver.ValidID(id); (err == nil) != ok {
			t.Errorf("ValidID(%q) = %v", id, err)
		}
	}
	if got := driver.GuestMAC(258); got != "06:00:ac:10:01:02" {
		t.Errorf("GuestMAC(258) = %s", got)
	}
}
