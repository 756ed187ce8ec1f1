package app

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/pkg/registration"
)

// Check opens and validates every file the settings name, the way Start uses them: the
// server's key pair, the data key, the TLS listener's certificate, the client certificates,
// the trusted certificates and the push providers' credentials. It binds nothing, takes no
// lock and opens no database. The key pair and the data key may be missing (Start creates
// them); each such file gives a note. Every problem is reported, joined into one error.
func Check(s *config.Settings) (notes []string, err error) {
	if s == nil {
		return nil, errors.New("app: no settings")
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	a := &App{settings: s, log: log}
	var errs []error
	k := s.Keys
	_, privErr := os.Stat(k.PrivateKeyFile)
	_, pubErr := os.Stat(k.PublicKeyFile)
	if errors.Is(privErr, os.ErrNotExist) && errors.Is(pubErr, os.ErrNotExist) {
		notes = append(notes, fmt.Sprintf("the server key pair %s and %s does not exist yet: the first start creates it", k.PrivateKeyFile, k.PublicKeyFile))
	} else if err := a.readKeys(); err != nil {
		errs = append(errs, err)
	}
	if k.DataKey.IsEmpty() {
		if _, err := os.Stat(k.DataKeyFile); errors.Is(err, os.ErrNotExist) {
			notes = append(notes, fmt.Sprintf("the data key %s does not exist yet: the first start creates it", k.DataKeyFile))
		} else if _, err := a.dataKey(); err != nil {
			errs = append(errs, err)
		}
	} else if _, err := a.dataKey(); err != nil {
		errs = append(errs, err)
	}
	if f := s.Log.FileName; f != "" {
		// serve appends to it (creating it when missing): an existing one must take appends.
		if fi, err := os.Stat(f); err == nil {
			if fi.IsDir() {
				errs = append(errs, fmt.Errorf("log file %s is a folder", f))
			} else if w, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0); err != nil {
				errs = append(errs, fmt.Errorf("log file: %w", err))
			} else {
				w.Close()
			}
		}
	}
	if _, err := serverTLS(s.TLSServerOptions); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := a.clientTLS(); err != nil {
		errs = append(errs, err)
	}
	if err := a.startPush(); err != nil {
		if len(errs) == 0 || errs[len(errs)-1].Error() != err.Error() { // a bad trusted certificate fails both
			errs = append(errs, err)
		}
	} else {
		a.push.close()
	}
	return notes, errors.Join(errs...)
}

// serverTLS loads the certificate of the TLS listeners (<TlsServerOptions>); nil when none.
func serverTLS(o config.TLSServerOptions) (*tls.Config, error) {
	if o.CertificateFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(o.CertificateFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS server certificate %s: %w", o.CertificateFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: o.MinVersion}, nil
}

// clientTLS is the configuration of TLS connections to proxies: the system roots plus
// <TrustedCertificates>, and the <TlsClientCertificates> by host.
func (a *App) clientTLS() (*tls.Config, []sipua.ClientCertificate, error) {
	var errs []error
	roots, err := a.rootCAs()
	if err != nil {
		errs = append(errs, err)
	}
	var certs []sipua.ClientCertificate
	for _, c := range a.settings.TLSClientCertificates {
		cert, err := tls.LoadX509KeyPair(c.File, c.KeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("TLS client certificate %s (key %s): %w", c.File, c.KeyFile, err))
			continue
		}
		if cert.Leaf == nil && len(cert.Certificate) > 0 {
			cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
		}
		certs = append(certs, sipua.ClientCertificate{Host: c.Host, Certificate: cert})
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	var conf *tls.Config
	if roots != nil {
		conf = &tls.Config{RootCAs: roots}
	}
	return conf, certs, nil
}

// readKeys reads the server's key pair as Start does.
func (a *App) readKeys() error {
	k := a.settings.Keys
	if _, err := os.Stat(k.PrivateKeyFile); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(k.PublicKeyFile); err == nil {
			return fmt.Errorf("keys: %s exists but %s does not; restore it or remove both", k.PublicKeyFile, k.PrivateKeyFile)
		}
	}
	var err error
	if a.private, err = registration.ReadKeyFile(k.PrivateKeyFile); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if a.public, err = registration.ReadKeyFile(k.PublicKeyFile); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return nil
}

// checkServiceAccount parses the private key of an FCM service account, which the OAuth
// library would only read at the first push: a bad key is found at start, not on a call.
func checkServiceAccount(sa []byte) error {
	var acc struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(sa, &acc); err != nil {
		return fmt.Errorf("service account is not JSON: %w", err)
	}
	blk, _ := pem.Decode([]byte(acc.PrivateKey))
	if blk == nil {
		return errors.New("service account: private_key holds no PEM key")
	}
	if _, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil {
		if _, err1 := x509.ParsePKCS1PrivateKey(blk.Bytes); err1 != nil {
			return fmt.Errorf("service account: private_key: %w", err)
		}
	}
	return nil
}
