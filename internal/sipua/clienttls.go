package sipua

import (
	"crypto/tls"
	"strings"
)

// ClientCertificate is a certificate the UA presents when it connects over TLS to a proxy
// whose host name matches Host (<TlsClientCertificates><Certificate Host …/>).
type ClientCertificate struct {
	// Host is a host name, "*.example.com" for its subdomains (not itself), or "" or "*" for
	// every host; compared without case.
	Host        string
	Certificate tls.Certificate
}

// Matches reports whether the certificate is for host.
func (c ClientCertificate) Matches(host string) bool {
	want := strings.ToLower(strings.TrimSuffix(c.Host, "."))
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	switch {
	case want == "" || want == "*":
		return true
	case strings.HasPrefix(want, "*."):
		return strings.HasSuffix(host, want[1:]) && len(host) > len(want)-1
	}
	return want == host
}

// clientTLS is the configuration of an outgoing TLS connection to the proxy serverName: the
// Config's ClientTLS (or the system roots), serverName as SNI and verified name, and the first
// matching client certificate, if any.
func (u *UA) clientTLS(serverName string) *tls.Config {
	conf := u.cfg.ClientTLS
	if conf == nil {
		conf = &tls.Config{}
	}
	conf = conf.Clone()
	if conf.ServerName == "" {
		conf.ServerName = serverName
	}
	for _, c := range u.cfg.ClientCertificates {
		if c.Matches(conf.ServerName) {
			conf.Certificates = []tls.Certificate{c.Certificate}
			break
		}
	}
	return conf
}
