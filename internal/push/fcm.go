package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"
)

// FCM defaults.
const (
	FCMEndpoint = "https://fcm.googleapis.com"
	// FCMScope is the OAuth2 scope that allows sending messages.
	FCMScope = "https://www.googleapis.com/auth/firebase.messaging"
	// DefaultFCMMessageTTL is how long FCM keeps a message or test
	// notification for an offline device; calls use ttl "0s".
	DefaultFCMMessageTTL = 24 * time.Hour
)

// FCMOptions configures an FCM HTTP v1 notifier authenticated with a Google
// service account.
type FCMOptions struct {
	// Endpoint is the base URL of the FCM API; empty means Google's.
	Endpoint string
	// ServiceAccountJSON is the service account key (the JSON file
	// downloaded from the Firebase console); ServiceAccountFile names it
	// instead.
	ServiceAccountJSON []byte
	ServiceAccountFile string
	// ProjectID is the Firebase project; empty means the service
	// account's project_id.
	ProjectID string
	// TokenURL replaces the OAuth2 token endpoint of the service account
	// (its token_uri).
	TokenURL string
	// MessageTTL is how long FCM may hold a message notification for an
	// offline device; default 24 hours.
	MessageTTL time.Duration
	// HTTPClient carries both the token requests and the sends; nil means
	// a default client (HTTP/2 over TLS).
	HTTPClient *http.Client
	// Logger receives debug entries per push; nil discards them.
	Logger logrus.FieldLogger
}

// FCM sends data messages through Firebase Cloud Messaging's HTTP v1 API.
// The OAuth2 access token is fetched with the service account's JWT bearer
// grant (RFC 7523) and cached until shortly before it expires.
type FCM struct {
	sendURL    string
	client     *http.Client
	tokenCtx   context.Context
	conf       oauthConfig
	messageTTL time.Duration
	log        logrus.FieldLogger

	mu sync.Mutex
	ts oauth2.TokenSource
}

// oauthConfig is the part of *jwt.Config we use: a source of tokens.
type oauthConfig interface {
	TokenSource(ctx context.Context) oauth2.TokenSource
}

// NewFCM checks the options, parses the service account and returns a
// notifier. It makes no network connection.
func NewFCM(o FCMOptions) (*FCM, error) {
	base, err := checkEndpoint("Endpoint", o.Endpoint, FCMEndpoint)
	if err != nil {
		return nil, err
	}
	conf, saProject, err := fcmServiceAccount(o)
	if err != nil {
		return nil, err
	}
	project := o.ProjectID
	if project == "" {
		project = saProject
	}
	if project == "" || strings.ContainsFunc(project, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r == ':' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
	}) {
		return nil, fmt.Errorf("push: fcm: project id %q is missing or malformed", project)
	}
	ttl := o.MessageTTL
	if ttl == 0 {
		ttl = DefaultFCMMessageTTL
	}
	if ttl < 0 || ttl > 28*24*time.Hour {
		return nil, fmt.Errorf("push: fcm: MessageTTL %v must be between 0 and 28 days", ttl)
	}
	client := o.HTTPClient
	if client == nil {
		// A transport of its own, so closing it touches no one else's.
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	// Token requests are not tied to one Send's context, so they get a
	// time limit of their own.
	tokenClient := &http.Client{Transport: client.Transport, Jar: client.Jar, Timeout: defaultRequestTimeout}
	f := &FCM{
		sendURL:    base + "/v1/projects/" + project + "/messages:send",
		client:     client,
		tokenCtx:   context.WithValue(context.Background(), oauth2.HTTPClient, tokenClient),
		conf:       conf,
		messageTTL: ttl,
		log:        logger(o.Logger),
	}
	f.ts = conf.TokenSource(f.tokenCtx)
	return f, nil
}

// fcmServiceAccount reads the service account of o (inline or from its file), checks that it is
// one, and returns its JWT configuration (with o.TokenURL when set) and its project id.
func fcmServiceAccount(o FCMOptions) (*jwt.Config, string, error) {
	var err error
	sa := o.ServiceAccountJSON
	if len(sa) == 0 {
		if o.ServiceAccountFile == "" {
			return nil, "", errors.New("push: fcm: neither ServiceAccountJSON nor ServiceAccountFile is set")
		}
		if sa, err = os.ReadFile(o.ServiceAccountFile); err != nil {
			return nil, "", fmt.Errorf("push: fcm: reading service account: %w", err)
		}
	}
	var meta struct {
		Type      string `json:"type"`
		ProjectID string `json:"project_id"`
	}
	if err := json.Unmarshal(sa, &meta); err != nil {
		return nil, "", fmt.Errorf("push: fcm: service account is not JSON: %w", err)
	}
	if meta.Type != "service_account" {
		return nil, "", fmt.Errorf("push: fcm: credentials type is %q, want \"service_account\"", meta.Type)
	}
	conf, err := google.JWTConfigFromJSON(sa, FCMScope)
	if err != nil {
		return nil, "", fmt.Errorf("push: fcm: service account: %w", err)
	}
	if o.TokenURL != "" {
		u, err := url.Parse(o.TokenURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, "", fmt.Errorf("push: fcm: TokenURL %q is not an http(s) URL", o.TokenURL)
		}
		conf.TokenURL = o.TokenURL
	}
	return conf, meta.ProjectID, nil
}

// Close closes the idle connections of the notifier's HTTP client.
func (f *FCM) Close() error {
	f.client.CloseIdleConnections()
	return nil
}

// Platform returns PlatformFCM.
func (f *FCM) Platform() string { return PlatformFCM }

// tokenSource returns the cached token source.
func (f *FCM) tokenSource() oauth2.TokenSource {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ts
}

// resetToken drops the cached access token after FCM refused it (401).
func (f *FCM) resetToken(old oauth2.TokenSource) {
	f.mu.Lock()
	if f.ts == old {
		f.ts = f.conf.TokenSource(f.tokenCtx)
	}
	f.mu.Unlock()
}

// fcmMessage is the v1 "message" resource, the parts we use.
type fcmMessage struct {
	Token   string            `json:"token"`
	Data    map[string]string `json:"data"`
	Android fcmAndroid        `json:"android"`
}

type fcmAndroid struct {
	Priority    string `json:"priority"`
	TTL         string `json:"ttl"`
	CollapseKey string `json:"collapse_key,omitempty"`
}

// fcmError is the google.rpc.Status error body.
type fcmError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// Send posts n once as a data message. A call has high Android priority
// and ttl "0s" (deliver now or drop: a late ring is worse than none);
// everything else (missed call, answered elsewhere, messages, tests,
// reminders) has normal priority and keeps MessageTTL, so that it does not
// spend the app's high-priority budget. The texts travel as data fields
// title, body, sound and badge for the app to show. FCM's answers are mapped
// as Google documents them: UNREGISTERED and INVALID_ARGUMENT on the token
// kill the token; SENDER_ID_MISMATCH and THIRD_PARTY_AUTH_ERROR are
// configuration errors that keep it.
//
// Its cyclomatic complexity (31) comes from three short stages in a row that share the
// request's state: the message per kind, the send with its OAuth token, and the mapping of
// Google's answer (the FcmError detail, the message.token field violation, then the status).
// The mapping is kept in one switch at the end so it can be read against Google's error table.
func (f *FCM) Send(ctx context.Context, n Notification) (Result, error) {
	if err := n.validate(PlatformFCM); err != nil {
		return Result{}, err
	}
	msg := fcmMessage{
		Token:   n.DeviceToken(),
		Data:    n.payloadFields(),
		Android: fcmAndroid{Priority: "high", TTL: "0s"},
	}
	if n.Kind.IsCall() {
		msg.Android.CollapseKey = n.PairingID
		addAlertFields(msg.Data, n.Alert) // for the app's own call screen
	} else {
		msg.Android.Priority = "normal"
		msg.Android.TTL = strconv.FormatInt(int64(f.messageTTL/time.Second), 10) + "s"
		addAlertFields(msg.Data, n.Alert)
		switch n.Kind {
		case KindMissedCall, KindAnsweredElsewhere:
			msg.Android.CollapseKey = n.PairingID
		case KindExpiry, KindOff:
			msg.Android.CollapseKey = "sipis-expiry"
		}
	}
	body, err := json.Marshal(map[string]any{"message": msg})
	if err != nil {
		return Result{}, fmt.Errorf("push: fcm: encoding message: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultRequestTimeout)
		defer cancel()
	}
	log := f.log.WithFields(logrus.Fields{"token": ShortToken(n.Device.PushToken), "kind": string(n.Kind)})

	ts := f.tokenSource()
	at, err := tokenWithin(ctx, ts)
	if err != nil {
		res := Result{Retryable: true}
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			res.Status = re.Response.StatusCode
			res.Retryable = retryableStatus(re.Response.StatusCode)
			res.Reason = "access token: " + re.ErrorCode
		}
		log.WithField("err", err).Debug("fcm: no access token")
		return res, fmt.Errorf("push: fcm: getting access token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.sendURL, bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("push: fcm: %w", err)
	}
	req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	at.SetAuthHeader(req)
	resp, err := f.client.Do(req)
	if err != nil {
		log.WithField("err", err).Debug("fcm: post failed")
		return Result{Retryable: true}, fmt.Errorf("push: fcm: %w", err)
	}
	defer resp.Body.Close()
	raw := readBody(resp.Body)
	res := Result{Status: resp.StatusCode}
	log = log.WithField("status", resp.StatusCode)
	if resp.StatusCode == http.StatusOK {
		var ok struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(raw, &ok)
		res.Accepted, res.ID = true, ok.Name
		log.Debug("fcm: accepted")
		return res, nil
	}
	var fe fcmError
	_ = json.Unmarshal(raw, &fe)
	code, tokenField := "", false
	for _, d := range fe.Error.Details {
		if d.ErrorCode != "" {
			code = d.ErrorCode
		}
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				tokenField = true
			}
		}
	}
	if code == "" {
		code = fe.Error.Status
	}
	res.Reason = code
	if fe.Error.Message != "" {
		res.Reason = strings.TrimSpace(code + ": " + fe.Error.Message)
	}
	if res.Reason == "" {
		res.Reason = http.StatusText(resp.StatusCode)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && (code == "UNREGISTERED" || code == "NOT_FOUND"),
		resp.StatusCode == http.StatusBadRequest && code == "INVALID_ARGUMENT" &&
			(tokenField || strings.Contains(strings.ToLower(fe.Error.Message), "registration token")):
		res.TokenInvalid = true
	case code == "SENDER_ID_MISMATCH" || code == "THIRD_PARTY_AUTH_ERROR" || code == "PERMISSION_DENIED":
		// The token belongs to another Firebase project, or the APNs
		// credentials in the Firebase project are wrong: not the device's fault.
		res.ConfigError = true
	case resp.StatusCode == http.StatusUnauthorized:
		// The access token was revoked or expired early: fetch another.
		f.resetToken(ts)
		res.Retryable = true
	case retryableStatus(resp.StatusCode):
		res.Retryable = true
		res.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	log.WithField("reason", code).Debug("fcm: refused")
	return res, &StatusError{Platform: PlatformFCM, Result: res}
}

// addAlertFields puts the user-visible text of a notice into FCM data
// fields (all strings, as FCM requires).
func addAlertFields(m map[string]string, a *Alert) {
	if a == nil {
		return
	}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("title", a.Title)
	set("body", a.Body)
	set("sound", a.Sound)
	set("loc_key", a.LocKey)
	if len(a.LocArgs) > 0 {
		b, _ := json.Marshal(a.LocArgs)
		m["loc_args"] = string(b)
	}
	if a.Badge != nil {
		m["badge"] = strconv.Itoa(*a.Badge)
	}
}

// tokenWithin returns ts's token, or ctx's error if ctx ends first. The
// cached token comes back at once; a fetch that outlives ctx finishes in
// the background (bounded by the token client's timeout) and is cached
// for the next send.
func tokenWithin(ctx context.Context, ts oauth2.TokenSource) (*oauth2.Token, error) {
	type result struct {
		tok *oauth2.Token
		err error
	}
	ch := make(chan result, 1)
	go func() {
		t, err := ts.Token()
		ch <- result{t, err}
	}()
	select {
	case r := <-ch:
		return r.tok, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
