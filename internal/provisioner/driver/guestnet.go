package driver

import (
	"fmt"
	"net/netip"
)

// GuestNetwork is the subnet of the bridge behind the VMs' taps (docs/provisioner.md): the
// host's bridge has the subnet's first address, the VMs' gateway; a VM in slot s has the
// address FirstGuestHost + s.
type GuestNetwork struct {
	Subnet netip.Prefix
}

// FirstGuestHost is the host number of slot 0's address; .1 is the gateway, .2–.9 are left for
// the host's own services on the bridge.
const FirstGuestHost = 10

// ParseGuestNetwork reads an IPv4 CIDR such as 172.30.0.0/24.
func ParseGuestNetwork(cidr string) (GuestNetwork, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() || p.Bits() > 28 {
		return GuestNetwork{}, fmt.Errorf("guest subnet %q: want an IPv4 CIDR of /28 or larger, such as 172.30.0.0/24", cidr)
	}
	return GuestNetwork{Subnet: p.Masked()}, nil
}

// Gateway is the bridge's address.
func (n GuestNetwork) Gateway() netip.Addr { return n.Subnet.Addr().Next() }

// Slots is how many VMs the subnet has addresses for.
func (n GuestNetwork) Slots() int {
	return (1 << (32 - n.Subnet.Bits())) - FirstGuestHost - 1 // the last address is the broadcast
}

// Addr is the address of the VM in slot.
func (n GuestNetwork) Addr(slot int) (netip.Prefix, error) {
	if slot < 0 || slot >= n.Slots() {
		return netip.Prefix{}, fmt.Errorf("slot %d has no address in %s (%d slots)", slot, n.Subnet, n.Slots())
	}
	a := n.Subnet.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(FirstGuestHost + slot) //nolint:gosec // bounded by Slots
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), n.Subnet.Bits()), nil
}

// BootArgs are the guest init's network settings for the VM in slot: its address and gateway.
// Not secret: the kernel command line is readable in the guest and the host's process list.
func (n GuestNetwork) BootArgs(slot int) (string, error) {
	a, err := n.Addr(slot)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("frp.addr=%s frp.gw=%s", a, n.Gateway()), nil
}
