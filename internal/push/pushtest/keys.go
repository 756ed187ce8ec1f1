package pushtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// GenerateKey makes a fresh EC P-256 key and writes it, as Apple's .p8
// files are (a PEM "PRIVATE KEY" block holding PKCS#8), to a file under
// t.TempDir(). It returns the file name and the key.
func GenerateKey(t testing.TB) (string, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("pushtest: generating P-256 key: %v", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("pushtest: encoding key: %v", err)
	}
	name := filepath.Join(t.TempDir(), "AuthKey_TEST.p8")
	if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatalf("pushtest: writing key file: %v", err)
	}
	return name, key
}

// ServiceAccount is a generated Google service account.
type ServiceAccount struct {
	// JSON is the key file content, as downloaded from the console.
	JSON []byte
	// Email is the account's client_email (the JWT issuer).
	Email string
	// ProjectID is the account's project_id.
	ProjectID string
	// Key is the account's RSA key; the fake token endpoint checks
	// assertions with its public half.
	Key *rsa.PrivateKey
}

// NewServiceAccount generates a service account with a fresh 2048-bit RSA
// key whose token_uri is tokenURL.
func NewServiceAccount(t testing.TB, projectID, tokenURL string) *ServiceAccount {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("pushtest: generating RSA key: %v", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("pushtest: encoding RSA key: %v", err)
	}
	email := "sipis-push@" + projectID + ".iam.gserviceaccount.com"
	js, err := json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  projectID,
		"private_key_id":              "0123456789abcdef0123456789abcdef01234567",
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                email,
		"client_id":                   "100000000000000000001",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   tokenURL,
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
	}, "", "  ")
	if err != nil {
		t.Fatalf("pushtest: encoding service account: %v", err)
	}
	return &ServiceAccount{JSON: js, Email: email, ProjectID: projectID, Key: key}
}

// WriteFile writes the service account JSON under t.TempDir() and returns
// the file name.
func (sa *ServiceAccount) WriteFile(t testing.TB) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "service-account.json")
	if err := os.WriteFile(name, sa.JSON, 0o600); err != nil {
		t.Fatalf("pushtest: writing service account: %v", err)
	}
	return name
}
