package sipua

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// OptionsResult is the outcome of one OPTIONS ping.
type OptionsResult struct {
	Status int
	Reason string
	// RTT is the time from the first send to the final response.
	RTT time.Duration
}

// Options sends an OPTIONS request (RFC 3261 §11) to uri ("sip:host[:port]",
// "sips:..." or a bare "host[:port]") over transport ("" means udp, or the
// uri's transport parameter). Any final response means the target is
// alive; no response is ErrTimeout, an unresolvable host ErrResolve.
func (u *UA) Options(ctx context.Context, uri string, transport string) (OptionsResult, error) {
	var out OptionsResult
	raw := strings.TrimSpace(uri)
	if raw == "" {
		return out, fmt.Errorf("sipua: options: empty uri")
	}
	if strings.ContainsAny(raw, "\r\n\x00 ") {
		return out, fmt.Errorf("sipua: options: uri %q contains blanks or line breaks", uri)
	}
	if !strings.HasPrefix(strings.ToLower(raw), "sip:") && !strings.HasPrefix(strings.ToLower(raw), "sips:") {
		raw = "sip:" + raw
	}
	var target sip.Uri
	if err := sip.ParseUri(raw, &target); err != nil || target.Host == "" {
		return out, fmt.Errorf("sipua: options: bad uri %q: %v", uri, err)
	}
	if transport == "" {
		if t, ok := target.UriParams.Get("transport"); ok {
			transport = strings.ToLower(t)
		} else if target.Scheme == "sips" {
			transport = "tls"
		} else {
			transport = "udp"
		}
	}
	switch transport {
	case "udp", "tcp", "tls":
	default:
		return out, fmt.Errorf("sipua: options: unknown transport %q (want udp, tcp or tls)", transport)
	}
	p, err := u.pathTo(ctx, target.Host, target.Port, transport)
	if err != nil {
		return out, err
	}
	host, port := u.contactAddr(p, transport)
	branch := newBranch()
	reqURI := target.Scheme + ":"
	if target.User != "" {
		reqURI += target.User + "@"
	}
	reqURI += hostForURI(target.Host)
	if target.Port > 0 {
		reqURI += ":" + strconv.Itoa(target.Port)
	}
	var s strings.Builder
	s.WriteString("OPTIONS " + reqURI + " SIP/2.0\r\n")
	s.WriteString("Via: SIP/2.0/" + strings.ToUpper(transport) + " " + host + ":" + strconv.Itoa(port) + ";branch=" + branch + ";rport\r\n")
	s.WriteString("Max-Forwards: 70\r\n")
	s.WriteString("From: <sip:sipis@" + host + ">;tag=" + randHex(8) + "\r\n")
	s.WriteString("To: <" + reqURI + ">\r\n")
	s.WriteString("Call-ID: " + randHex(12) + "\r\n")
	s.WriteString("CSeq: 1 OPTIONS\r\n")
	s.WriteString("User-Agent: " + u.ua + "\r\n")
	s.WriteString("Accept: application/sdp\r\nContent-Length: 0\r\n\r\n")
	start := time.Now()
	ex, err := u.transact(ctx, p, branch, "OPTIONS", []byte(s.String()))
	if err != nil {
		return out, err
	}
	out.RTT = time.Since(start)
	out.Status, out.Reason = ex.res.StatusCode, ex.res.Reason
	return out, nil
}
