package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ErrNoRelayHost means sipis cannot tell woken devices where to connect: <Server
// PublicAddress> is empty, the device listener listens on every address and this machine has
// no address other than loopback ones.
var ErrNoRelayHost = errors.New(`config: no usable address to send devices to: the device listener ` +
	`(<Server Address>) listens on every address and this machine has no non-loopback address; ` +
	`set <Server PublicAddress="…">`)

// RelayHost is the host that woken devices are told to connect to (the relay_address of a call
// push): PublicAddress when set; else the listener's Address when it is a specific address;
// else the first non-loopback address of this machine (an IPv4 one when there is one), read
// from addrs (nil means the machine's interface addresses). An unspecified address
// ("0.0.0.0", "::") is never returned: it would send devices nowhere. ErrNoRelayHost is
// returned when there is no usable address.
func (s Server) RelayHost(addrs func() ([]net.Addr, error)) (string, error) {
	if h := strings.Trim(s.PublicAddress, "[]"); h != "" {
		if a, err := netip.ParseAddr(h); err == nil && a.IsUnspecified() {
			return "", fmt.Errorf("config: <Server PublicAddress=%q> is an unspecified address", s.PublicAddress)
		}
		return h, nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s.Address, "[]")); err == nil && !a.IsUnspecified() {
		return a.String(), nil
	} else if err != nil && s.Address != "" {
		return s.Address, nil // a host name: the operator chose it
	}
	if addrs == nil {
		addrs = net.InterfaceAddrs
	}
	list, err := addrs()
	if err != nil {
		return "", fmt.Errorf("%w (%v)", ErrNoRelayHost, err)
	}
	var v6 string
	for _, na := range list {
		var ip net.IP
		switch x := na.(type) {
		case *net.IPNet:
			ip = x.IP
		case *net.IPAddr:
			ip = x.IP
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		a = a.Unmap()
		if a.IsLoopback() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsMulticast() {
			continue
		}
		if a.Is4() {
			return a.String(), nil
		}
		if v6 == "" {
			v6 = a.String()
		}
	}
	if v6 != "" {
		return v6, nil
	}
	return "", ErrNoRelayHost
}
