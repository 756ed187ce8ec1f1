package app

import (
	"crypto/rand"
	"encoding/json"
	"strconv"
	"testing"

	"golang.org/x/crypto/nacl/box"

	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/web"

	"github.com/sipis/sipis/pkg/registration"
)

// boxSeal seals arbitrary plaintext, to test what the server does with bad documents.
func boxSeal(msg []byte, pub *registration.Key) ([]byte, error) {
	return box.SealAnonymous(nil, msg, pub, rand.Reader)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

type (
	webQuery = web.InstanceQuery
	webRow   = web.InstanceRow
)

// parseSettingsFragment parses a whole <Sipis> document, for tests that take one section.
func parseSettingsFragment(xml, dir string) (*config.Settings, error) {
	return config.Parse([]byte(xml), dir)
}

func configSecret(v string) config.Secret { return config.NewSecret(v) }
