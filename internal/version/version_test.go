package version

import "testing"

func TestNumber(t *testing.T) {
	for v, want := range map[string]string{
		"v0.1.0": "0.1.0", "v1.2.3-4-gabc1234": "1.2.3", "1.2.3": "1.2.3", "v2.0.0-dirty": "2.0.0",
		"8f2487f": "0.0.0", "8f2487f-dirty": "0.0.0", "dev": "0.0.0", "": "0.0.0", "12345": "0.0.0",
	} {
		Version = v
		if got := Number(); got != want {
			t.Errorf("Number(%q) = %q, want %q", v, got, want)
		}
	}
}
