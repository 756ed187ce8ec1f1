package probe

import "testing"

func TestHealthStep(t *testing.T) {
	const n, m = 3, 2
	cases := []struct {
		name     string
		from     health
		answered bool
		want     health
	}{
		{"unknown answers", health{Unknown, 0, 0}, true, health{Up, 0, 1}},
		{"unknown fails once", health{Unknown, 0, 0}, false, health{Unknown, 1, 0}},
		{"unknown fails N times", health{Unknown, 2, 0}, false, health{Down, 3, 0}},
		{"up fails below N", health{Up, 1, 0}, false, health{Up, 2, 0}},
		{"up fails N times", health{Up, 2, 0}, false, health{Down, 3, 0}},
		{"up answer resets failures", health{Up, 2, 0}, true, health{Up, 0, 1}},
		{"down keeps failing", health{Down, 3, 0}, false, health{Down, 4, 0}},
		{"down answers below M", health{Down, 4, 0}, true, health{Down, 0, 1}},
		{"down answers M times", health{Down, 0, 1}, true, health{Up, 0, 2}},
		{"down failure resets successes", health{Down, 0, 1}, false, health{Down, 1, 0}},
	}
	for _, c := range cases {
		if got := c.from.step(c.answered, n, m); got != c.want {
			t.Errorf("%s: %+v.step(%v) = %+v, want %+v", c.name, c.from, c.answered, got, c.want)
		}
	}
}

func TestHostOf(t *testing.T) {
	cases := map[string]string{
		"sip:proxy.example.com":                           "proxy.example.com",
		"sips:alice@proxy.example.com:5061;transport=tls": "proxy.example.com:5061",
		"sip:[::1]:5060":                                  "[::1]:5060",
		"sip:":                                            "",
		"sip:bob@":                                        "",
	}
	for in, want := range cases {
		if got := hostOf(in); got != want {
			t.Errorf("hostOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzTargetNormalize(f *testing.F) {
	for _, s := range []string{"sip:proxy.example.com", "sips:a@b:5061;transport=tls", "sip:", "http://x", "sip:[::1]:5060", "sip:a b", "SIP:X;TRANSPORT=UDP"} {
		f.Add(s, "udp")
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, uri, transport string) {
		n, err := Target{URI: uri, Transport: transport}.normalize()
		if err != nil {
			return
		}
		if hostOf(n.URI) == "" {
			t.Errorf("accepted %q without a host", uri)
		}
		if !transports[n.Transport] {
			t.Errorf("accepted transport %q", n.Transport)
		}
		if k := n.Key(); len(k) < len(n.URI) || k[:len(n.URI)] != n.URI {
			t.Errorf("Key %q does not start with the URI %q", k, n.URI)
		}
	})
}
