package config

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func ipNet(s string) net.Addr {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	ip, _, _ := net.ParseCIDR(s)
	n.IP = ip
	return n
}

// TestRelayHost: the address pushed to devices is PublicAddress, else a specific listener
// address, else the first non-loopback address of the machine (IPv4 first); never an
// unspecified one, and a clear error when there is none (issue 10 point 5).
func TestRelayHost(t *testing.T) {
	machine := func(cidrs ...string) func() ([]net.Addr, error) {
		return func() ([]net.Addr, error) {
			var out []net.Addr
			for _, c := range cidrs {
				out = append(out, ipNet(c))
			}
			return out, nil
		}
	}
	for _, tc := range []struct {
		name   string
		s      Server
		addrs  func() ([]net.Addr, error)
		want   string
		errNo  bool
		errAny bool
	}{
		{"public", Server{Address: "0.0.0.0", PublicAddress: "sip.example.org"}, machine(), "sip.example.org", false, false},
		{"public v6", Server{Address: "0.0.0.0", PublicAddress: "[2001:db8::5]"}, machine(), "2001:db8::5", false, false},
		{"public unspecified", Server{Address: "0.0.0.0", PublicAddress: "0.0.0.0"}, machine("192.0.2.7/24"), "", false, true},
		{"listener", Server{Address: "127.0.0.1"}, machine("192.0.2.7/24"), "127.0.0.1", false, false},
		{"default: first non-loopback", Server{Address: "0.0.0.0"},
			machine("127.0.0.1/8", "::1/128", "fe80::1/64", "2001:db8::9/64", "192.0.2.7/24", "198.51.100.1/24"), "192.0.2.7", false, false},
		{"default on ::", Server{Address: "::"}, machine("127.0.0.1/8", "2001:db8::9/64"), "2001:db8::9", false, false},
		{"only loopback", Server{Address: "0.0.0.0"}, machine("127.0.0.1/8", "::1/128"), "", true, true},
		{"interfaces fail", Server{Address: "0.0.0.0"}, func() ([]net.Addr, error) { return nil, errors.New("boom") }, "", true, true},
	} {
		got, err := tc.s.RelayHost(tc.addrs)
		if got != tc.want || (err != nil) != tc.errAny || (tc.errNo && !errors.Is(err, ErrNoRelayHost)) {
			t.Errorf("%s: RelayHost = %q, %v; want %q (error %v)", tc.name, got, err, tc.want, tc.errAny)
		}
	}
}

// TestPublicAddressUnspecifiedRejected: <Server PublicAddress="0.0.0.0"> is a settings error
// that names the attribute.
func TestPublicAddressUnspecifiedRejected(t *testing.T) {
	for _, v := range []string{"0.0.0.0", "::", "[::]"} {
		_, err := Parse([]byte(`<Sipis><Server PublicAddress="`+v+`"/></Sipis>`), t.TempDir())
		if err == nil || !containsAll(err.Error(), "PublicAddress", "unspecified") {
			t.Errorf("PublicAddress=%q: %v", v, err)
		}
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
