// Package config reads, defaults and validates sipis's Settings.xml.
//
// The file follows the layout SIPIS operators already write: a root element
// <Sipis> (with an optional Defaults="other.xml" attribute naming a file that
// is loaded first and then overridden), settings as attributes of named
// elements, durations as an element with Days/Hours/Minutes/Seconds
// attributes that are summed, and booleans written Yes/No (true/false is
// accepted too). Settings.example.xml at the top of the repository documents
// every element and attribute with its default.
//
// Loading starts from Default, decodes each file over it, reads secret files,
// resolves relative paths against the folder of the file that named them, and
// finally validates. Unknown elements or attributes and bad values are errors
// of type *Error that name the file, line, element and attribute.
//
// It owns the Settings types, their defaults, the compatibility with the original product's
// files (compat.go) and the list of settings accepted without effect (Warnings). It must not
// import any other package of sipis, open sockets or start anything, and it must not log:
// problems are returned as errors and warnings for the caller to report. A Secret never
// prints its value.
package config

import (
	"crypto/tls"
	"net/netip"
	"time"
)

// Settings is everything read from Settings.xml. Paths are resolved against
// the folder of the file that named them (see Load); Default leaves them
// relative.
//
// Each field is the element of the same name (HTTPServer is <HttpServer>,
// TLSServerOptions is <TlsServerOptions>); see the field types.
type Settings struct {
	Server                Server              // <Server>
	Sip                   Sip                 // <Sip>
	HTTPServer            HTTPServer          // <HttpServer>
	Administrator         Administrator       // <Administrator>
	Database              Database            // <Database>
	Lock                  Lock                // <Lock>
	Keys                  Keys                // <Keys>
	Log                   Log                 // <Log>
	NotificationServers   NotificationServers // <NotificationServers>
	TLSClientCertificates []ClientCertificate // <TlsClientCertificates><Certificate/>…
	TrustedCertificates   []Certificate       // <TrustedCertificates><Certificate/>…
	TLSServerOptions      TLSServerOptions    // <TlsServerOptions>
	Instance              Instance            // <Instance>
	IncomingCall          IncomingCall        // <IncomingCall>
	IncomingTextMessage   IncomingTextMessage // <IncomingTextMessage>
	PushTest              PushTest            // <PushTest>
	PushTexts             PushTexts           // <PushTexts>
	Probe                 Probe               // <Probe>
	PbxHook               PbxHook             // <PbxHook>
	Cluster               Cluster             // <Cluster>
}

// Server is <Server>: this node's name and its device-facing SIP listener
// (TCP, and TLS when TLSServerOptions has a certificate), where woken devices
// connect to take their call.
type Server struct {
	// Name identifies this node (unique per node sharing a database).
	// Default "sipis-1".
	Name string
	// Address is the listening address of the device-facing listener.
	// Default "0.0.0.0".
	Address string
	// Port of the device-facing listener; 0 picks a free port. Default 5070.
	Port int
	// PublicAddress is the host put in Via and Contact headers and pushed to
	// devices as the relay address; empty means, for Via and Contact, the
	// interface address towards each peer, and for the relay address
	// RelayHost's default. Never an unspecified address.
	PublicAddress string
	// PrivateAddress is the address used towards hosts on private networks;
	// empty means the same as PublicAddress.
	PrivateAddress string
}

// Transport is a SIP transport name as written in Settings.xml, lower case.
type Transport string

// The SIP transports sipis listens on and sends over.
const (
	TransportUDP Transport = "udp"
	TransportTCP Transport = "tcp"
	TransportTLS Transport = "tls"
)

// Sip is <Sip>: the listeners towards the users' proxies and the REGISTER
// timers.
type Sip struct {
	// Listeners are the <Listener> elements; default one UDP listener on
	// 0.0.0.0:5060. Listeners given in a file replace the default list.
	Listeners []Listener
	// UserAgent is the User-Agent header of requests sipis sends on its own
	// (OPTIONS probes). Default "sipis".
	UserAgent string
	// Register holds the REGISTER refresh and retry timers.
	Register Register
}

// Listener is one <Sip><Listener Transport Address Port/>.
type Listener struct {
	Transport Transport // default udp
	Address   string    // default 0.0.0.0
	Port      int       // default 5060; 0 picks a free port
}

// Register is <Sip><Register>: how registrations are refreshed and retried.
type Register struct {
	// RefreshFraction: re-REGISTER at this fraction of the granted expiry
	// (RFC 3261 §10.2.4 leaves the margin to the client), but never later
	// than 36 s before expiry (a whole transaction, Timer F = 32 s, must fit
	// before the binding lapses). Default 0.9.
	RefreshFraction float64
	// Jitter spreads refreshes and slow retries: each comes up to this
	// fraction of its delay early (never late, so a binding never lapses),
	// so instances do not re-register in bursts. Default 0.1.
	Jitter float64
	// DefaultExpires is requested when the app asks for none. Default 3600 s.
	DefaultExpires time.Duration
	// MinExpires and MaxExpires bound the expiry sipis requests. A 423
	// Interval Too Brief still raises it to the proxy's Min-Expires
	// (RFC 3261 §10.2.8). Defaults 60 s and 1 day.
	MinExpires time.Duration
	MaxExpires time.Duration
	// BackoffMin and BackoffMax bound the exponential backoff after a failed
	// REGISTER (timeout, 5xx); a Retry-After header wins when longer
	// (RFC 3261 §21.5.4). <Backoff><Min Seconds="5"/><Max Minutes="30"/>.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// UnauthorizedRetry is the delay before retrying after the proxy refused
	// the credentials (401/403 after authenticating). Default 30 minutes.
	UnauthorizedRetry time.Duration
	// MaxInFlightPerProxy caps concurrent REGISTER transactions towards one
	// proxy. Default 64.
	MaxInFlightPerProxy int
	// ResumeWindow spreads the resumption of stored instances after a start
	// over this window. Default 5 minutes.
	ResumeWindow time.Duration
	// TransactionTimeout is the client transaction timeout, Timer B/F of
	// RFC 3261 §17.1.1.2 and §17.1.2.2 (64*T1). Default 32 s.
	TransactionTimeout time.Duration
	// Workers is the number of goroutines sending REGISTERs. Default 256.
	Workers int
}

// HTTPServer is <HttpServer>: the operator pages and the registration API.
type HTTPServer struct {
	Address string // default 0.0.0.0
	Port    int    // default 5000; 0 picks a free port
	// MaxRegistrationBytes caps the body of POST /sipis/register.
	// Default 65536.
	MaxRegistrationBytes int
	// TrustedProxies are the TLS proxies in front of the HTTP port
	// (addresses or CIDR networks). Only from them are X-Forwarded-For,
	// X-Forwarded-Host and a PROXY protocol v1 header believed, so failed
	// logins are counted per client rather than per proxy. Default none.
	TrustedProxies []netip.Prefix
}

// Administrator is <Administrator>: the credentials of the admin pages.
// An empty password disables the admin pages.
type Administrator struct {
	UserName string // default "admin"
	// Password is plain text or a bcrypt hash ($2a$, $2b$ or $2y$).
	Password Secret
	// PasswordFile, when set, is the file Password was read from.
	PasswordFile string
}

// Database is <Database>.
type Database struct {
	// OpenString selects the store: a SQLite file path (or a file: URI),
	// resolved against the settings file's folder, or a PostgreSQL
	// connection string, either libpq key/value (host=dbsipis port=5432
	// dbname=sipis user=sipis password='…') or a postgres:// URL. Default
	// "sipis.db". A PostgreSQL string may hold a password: it is a secret,
	// never echoed in errors or logs.
	OpenString string
}

// Lock is <Lock>: the lock file that keeps a second server off the same
// database.
type Lock struct {
	FileName string // default "sipis.lock"
}

// Keys is <Keys>: the server's key files. The application creates missing
// files on first start; config only resolves their paths.
type Keys struct {
	PrivateKeyFile string // default "keys/server.key"
	PublicKeyFile  string // default "keys/server.pub"
	DataKeyFile    string // default "keys/data.key"
	// DataKey, when set inline (DataKey="…"), is used instead of DataKeyFile.
	DataKey Secret
}

// LogStdio names the standard stream the log goes to.
type LogStdio string

// The accepted Stdio values.
const (
	StdioStdout LogStdio = "Stdout"
	StdioStderr LogStdio = "Stderr"
	StdioNone   LogStdio = "None"
)

// LogFormat is the log line format.
type LogFormat string

// The accepted Format values.
const (
	FormatText LogFormat = "text"
	FormatJSON LogFormat = "json"
)

// Log is <Log>.
type Log struct {
	// FileName is the server log file; empty means no file.
	FileName string
	// InstanceFileName is the per-selector log turned on from /log; it must
	// contain "{selector}". Default "logs/instance-{selector}.log".
	InstanceFileName string
	// Level is one of Trace, Debug, Info, Warning, Error, Fatal.
	// Default Warning.
	Level Level
	// Stdio is Stdout, Stderr or None. Default Stdout.
	Stdio LogStdio
	// Format is text or json. Default text.
	Format LogFormat
	// Email sends log entries at or above Email.Level by e-mail (through the
	// SMTP server of <Probe><Alerts><Smtp>) when Email.To is set.
	Email LogEmail
	// HTTP is <Log><Http>: the access log of the web server.
	HTTP HTTPLog
	// ProblematicInstancesAutomatically is the original product's switch
	// that turned on instance logs by itself; nil when not given. sipis
	// accepts it and warns (see Settings.Warnings): instance logs are
	// turned on from /log?s= only.
	ProblematicInstancesAutomatically *bool
}

// NoInstanceLog is the InstanceFileName that turns instance logs off, as in
// the original product's files.
const NoInstanceLog = "/dev/null"

// LogEmail is <Log><Email To From Level>: warnings and errors of the server
// log by e-mail, through the SMTP server of <Probe><Alerts><Smtp>.
type LogEmail struct {
	To    string // recipients, comma-separated; empty means off
	From  string // sender address; empty means <Smtp From>
	Level Level  // least severe level e-mailed; default Error
	// Summary is <Summary>: a periodic e-mail counting the warnings and
	// errors logged since the last one.
	Summary LogSummary
	// Excerpt is <Excerpt>: the log entries themselves, at most one e-mail
	// per MinPeriod.
	Excerpt LogExcerpt
}

// LogSummary is <Log><Email><Summary Enabled><Period/><StartingAt/>.
type LogSummary struct {
	Enabled bool          // default No
	Period  time.Duration // <Period Days Hours Minutes Seconds/>; default 1 day
	// StartingAt is the time of day (local time) of the first summary, as
	// an offset from midnight: <StartingAt Hour Minute Second/>. Default 0.
	StartingAt time.Duration
}

// LogExcerpt is <Log><Email><Excerpt Enabled><MinPeriod/><MaxSize/><Filter>.
type LogExcerpt struct {
	Enabled   bool          // default Yes
	MinPeriod time.Duration // least time between two excerpts; default 5 minutes
	// MaxSize caps one excerpt's text: <MaxSize MegaBytes KiloBytes Bytes/>
	// (summed). Default 256 KiB; entries beyond it are counted, not sent.
	MaxSize int
	// Filter is <Filter><Exclude Severity Enabled/><Include Severity Enabled/>…:
	// each enabled rule that matches an entry (one at Severity or more
	// severe; every entry when Severity is left out) includes or excludes it; the
	// last match wins, and an entry no rule matches is included when it is
	// at or above Level.
	Filter []LogFilterRule
}

// LogFilterRule is one <Include> or <Exclude> of <Excerpt><Filter>.
type LogFilterRule struct {
	Include bool // <Include>; false is <Exclude>
	// Severity is the least severe level the rule matches; left out, it is
	// Trace, which matches every level.
	Severity Level
	Enabled  bool // default Yes
}

// HTTPLog is <Log><Http Enabled RequestBody><Filter><Exclude Response Enabled/>.
// The element being there turns the access log on.
type HTTPLog struct {
	Enabled bool // default No; Yes when <Http> is given without Enabled
	// RequestBody adds request bodies (form and JSON, secrets hidden; other
	// bodies by size only) to the log lines. Default No.
	RequestBody bool
	// Exclude leaves out the requests answered with these statuses.
	Exclude []HTTPLogExclude
}

// HTTPLogExclude is <Http><Filter><Exclude Response Enabled/>: requests
// answered with status Response are not logged.
type HTTPLogExclude struct {
	Response int
	Enabled  bool // default Yes
}

// NotificationServers is <NotificationServers>: the push providers.
type NotificationServers struct {
	Apns    Apns    // <Apns>
	Fcm     Fcm     // <Fcm>
	Webhook Webhook // <Webhook>
	// IncludeMessageText puts the text of a SIP MESSAGE in its push; off by
	// default so message content does not pass through Apple or Google.
	// <IncludeMessageText Enabled="No"/>.
	IncludeMessageText bool
	// Relays are the original product's <NotificationServer> elements: its
	// vendor's proprietary push relay, which sipis does not speak. They are
	// accepted with a warning (see Settings.Warnings).
	Relays []NotificationRelay
}

// NotificationRelay is <NotificationServers><NotificationServer Name Host
// Port Premium RequiresTls/>, kept only to name it in the warning.
type NotificationRelay struct {
	Name        string
	Host        string
	Port        int
	Premium     bool
	RequiresTLS bool
}

// Apns is <NotificationServers><Apns>: Apple push with token (JWT) auth.
type Apns struct {
	Enabled         bool   // default No
	Endpoint        string // default https://api.push.apple.com
	SandboxEndpoint string // default https://api.sandbox.push.apple.com
	// KeyFile is the .p8 signing key file; its content is read into Key.
	KeyFile string
	// Key is the PEM signing key, inline (Key="…") or read from KeyFile.
	Key    Secret
	KeyID  string // KeyId
	TeamID string // TeamId
	// Topic is accepted and has no effect (Settings.Warnings says so): each
	// device's appId from its registration is its APNs topic, with ".voip"
	// added for calls. Not required.
	Topic string
}

// Fcm is <NotificationServers><Fcm>: Firebase Cloud Messaging HTTP v1.
type Fcm struct {
	Enabled       bool   // default No
	Endpoint      string // default https://fcm.googleapis.com
	TokenEndpoint string // default https://oauth2.googleapis.com/token
	// ServiceAccountFile is the service account JSON file; its content is
	// read into ServiceAccount.
	ServiceAccountFile string
	// ServiceAccount is the service account JSON, inline or from the file.
	ServiceAccount Secret
	// ProjectID (ProjectId); empty means the service account's project.
	ProjectID string
}

// Webhook is <NotificationServers><Webhook>: pushes as signed JSON POSTs.
type Webhook struct {
	Enabled    bool   // default No
	URL        string // Url: where pushes are POSTed
	Secret     Secret // signing secret, inline or from SecretFile
	SecretFile string
}

// ClientCertificate is <TlsClientCertificates><Certificate Host File
// KeyFile/>: a certificate sipis presents when it connects over TLS to a
// proxy. The original product's attribute names FileName and
// RsaPrivateKeyFileName are accepted for File and KeyFile.
type ClientCertificate struct {
	// Host is the proxy host name the certificate is for: a name,
	// "*.example.com" for its subdomains, or "" or "*" for every host. The
	// first matching certificate is used.
	Host    string
	File    string // PEM certificate (chain)
	KeyFile string // PEM private key
}

// Certificate is <TrustedCertificates><Certificate File/>: a CA certificate
// trusted in addition to the system roots.
type Certificate struct {
	File string // PEM certificate
}

// TLSServerOptions is <TlsServerOptions>: the certificate of the TLS
// listeners.
type TLSServerOptions struct {
	CertificateFile string // PEM certificate chain; empty means no TLS
	KeyFile         string // PEM private key
	// MinVersion is tls.VersionTLS12 or tls.VersionTLS13 (written "1.2",
	// "1.3"). Default 1.2.
	MinVersion uint16
}

// Instance is <Instance>: per-account behaviour.
type Instance struct {
	// UserAgent overrides the User-Agent of REGISTERs sent for instances;
	// empty means the app's own.
	UserAgent string
	// MaxAge: an instance not heard from by any device for this long is
	// deleted with its credentials. Default 7 days.
	MaxAge time.Duration
	// NotRegisteredMaxAge: an instance that stayed unregistered (Idle or
	// failing) for this long is deleted. Default 12 hours.
	NotRegisteredMaxAge time.Duration
	// KeepAlive sends keep-alive packets on the flow to the proxy
	// (RFC 5626 §4.4.1 CRLF keep-alives). Default on, every 30 s.
	KeepAlive       bool
	KeepAlivePeriod time.Duration
	// MaxCalls caps simultaneous calls per instance. Default 4.
	MaxCalls int
	// Expiry reminders: see ExpiryReminders.
	ExpiryReminders
}

// NoResponseAction is what an unanswered incoming call gets.
type NoResponseAction string

// The accepted OnNoResponseFromDevice values.
const (
	Reject480 NoResponseAction = "Reject480" // 480 Temporarily Unavailable
	Reject408 NoResponseAction = "Reject408" // 408 Request Timeout
)

// IncomingCall is <IncomingCall>.
type IncomingCall struct {
	// NotAnsweredMaxAge is T1: from the push until a device says it is
	// coming. Default 2 minutes.
	NotAnsweredMaxAge time.Duration
	// DeviceProgressMaxAge is T2: from the device's progress until it takes
	// the call. Default 2 minutes.
	DeviceProgressMaxAge time.Duration
	// DialogMaxAge ends an answered call (BYE both ways) that has lasted this long, so a
	// dialog nobody hangs up cannot live for ever. Default 12 hours.
	DialogMaxAge time.Duration
	// OnNoResponseFromDevice is Reject480 (default) or Reject408.
	OnNoResponseFromDevice NoResponseAction
	// AllowedSources are networks besides the instance's proxy that may
	// send INVITE and MESSAGE to an instance. Default none.
	AllowedSources []netip.Prefix
}

// FilterAction is what a text message filter does.
type FilterAction string

// The accepted filter actions.
const (
	FilterDrop   FilterAction = "Drop"   // answer 200, store nothing, push nothing
	FilterReject FilterAction = "Reject" // answer 415 Unsupported Media Type
	FilterAccept FilterAction = "Accept" // store and push as usual
)

// IncomingTextMessage is <IncomingTextMessage>.
type IncomingTextMessage struct {
	// MaxBytes: bigger bodies are refused with 413. Default 4 MiB.
	MaxBytes int
	// Filters by Content-Type, first match wins; default one filter that
	// drops application/im-iscomposing+xml (RFC 3994).
	Filters []Filter
}

// Filter is one MESSAGE filter rule, in one of two forms:
//   - the short form <IncomingTextMessage><Filter ContentType Action/>:
//     ContentType is a media type, lower case; "text/*" matches every
//     subtype;
//   - the original product's <Filter><Entry Action Enabled><Header …/>
//     <RejectWith Code Phrase/></Entry></Filter>: each Entry is one Filter
//     with Headers (all must match) instead of ContentType. Its Action
//     AcceptAndDrop is Drop.
type Filter struct {
	ContentType string
	Action      FilterAction
	// Disabled is set by an Entry with Enabled="No"; the filter is then ignored.
	Disabled bool
	// Headers are the conditions of an Entry.
	Headers []HeaderMatch
	// RejectCode and RejectPhrase are <RejectWith Code Phrase/>: the answer
	// of Action Reject. Defaults 415 and "Unsupported Media Type".
	RejectCode   int
	RejectPhrase string

	elem int // index of its <Filter> element (error positions); -1 for an Entry
}

// HeaderOp is how a HeaderMatch compares.
type HeaderOp string

// The accepted comparisons, named as the attributes of <Header>.
const (
	// HeaderEqual: the value equals, without case; for Content-Type a value
	// without parameters is compared with the media type only.
	HeaderEqual HeaderOp = "Equal"
	// HeaderContains: the value contains the text, without case.
	HeaderContains HeaderOp = "Contains"
	// HeaderUintGt and HeaderUintLt: the value is a whole number greater
	// (less) than the given one. Content-Length is the body's real length.
	HeaderUintGt HeaderOp = "UintGt"
	HeaderUintLt HeaderOp = "UintLt"
)

// HeaderMatch is <Entry><Header Name Equal|Contains|UintGt|UintLt/>. A
// header that is absent never matches.
type HeaderMatch struct {
	Name  string
	Op    HeaderOp
	Value string
}

// PushTest is <PushTest>.
type PushTest struct {
	// MinAge is the least time between two test pushes to one instance.
	// Default 10 s.
	MinAge time.Duration
}

// Cluster is <Cluster>: several nodes sharing one database, each instance owned by one live
// node through a lease (internal/cluster).
type Cluster struct {
	// Enabled turns the node into a cluster member. Default No.
	Enabled bool
	// Address is the host:port this node's Contact names, where a survivor removes its
	// bindings after it died; empty means the first SIP listener (with PublicAddress).
	Address string
	// Lease is how long a renewal holds the node's instances (9 s); Renew how often it
	// renews (2 s); Margin how long before the lease's end the node stops sending (3 s);
	// Scan how often survivors look for dead nodes (2 s).
	Lease, Renew, Margin, Scan time.Duration
}

// Probe is <Probe>: OPTIONS probing of upstream SIP servers and alerts.
type Probe struct {
	Enabled     bool          // default Yes
	Interval    time.Duration // default 30 s
	Timeout     time.Duration // default 5 s
	DownAfter   int           // failures before down; default 3
	UpAfter     int           // successes before up again; default 2
	MaxInFlight int           // concurrent probes; default 100
	// ProbeInstanceProxies probes every distinct proxy in use by instances
	// besides Targets. Default Yes.
	ProbeInstanceProxies bool
	Targets              []Target // <Target/> elements; default none
	Alerts               Alerts   // <Alerts>
}

// Target is <Probe><Target Uri Transport/>.
type Target struct {
	URI string // sip: or sips: URI
	// Transport is udp, tcp or tls; empty means tls for sips: and udp for
	// sip: URIs.
	Transport Transport
}

// Alerts is <Probe><Alerts>: where probe state changes are sent.
type Alerts struct {
	// MinInterval is the least time between two alerts for one target.
	// Default 5 minutes.
	MinInterval time.Duration
	Smtp        Smtp           // <Smtp>
	EmailTo     []string       // <EmailTo Address/>
	Webhooks    []AlertWebhook // <Webhook Url Secret SecretFile/>
}

// Smtp is <Probe><Alerts><Smtp>.
type Smtp struct {
	Host         string // mail server; empty means no e-mail
	Port         int    // default 587
	UserName     string // empty means no authentication
	Password     Secret // inline or read from PasswordFile
	PasswordFile string
	StartTLS     bool   // StartTls; default Yes
	From         string // sender address
}

// AlertWebhook is <Probe><Alerts><Webhook>; Secret (required) signs the POST.
type AlertWebhook struct {
	URL        string // Url
	Secret     Secret // inline or read from SecretFile
	SecretFile string
}

// PbxHook is <PbxHook>: the PBX-hook mode (internal/hook), a vialer-middleware-compatible API
// the operator's PBX calls before dialling an account, so sipis can wake the app first.
type PbxHook struct {
	// Enabled mounts the API. Default No.
	Enabled bool
	// Prefix is the path the API is mounted under. Default "/api/".
	Prefix string
	// Wait is how long incoming-call/ waits for a device (WaitMilliseconds, default 4000).
	Wait time.Duration
	// ResendInterval is the time between pushes of one call (ResendIntervalMilliseconds,
	// default 1000).
	ResendInterval time.Duration
	// Secret, when set, must come with every incoming-call/ (header X-Sipis-Hook-Secret or
	// form field "secret"); inline or from SecretFile.
	Secret     Secret
	SecretFile string
	// PbxNetworks are the sources allowed to call incoming-call/ (<PbxNetworks><Network
	// Address="…"/>). An enabled hook needs at least one.
	PbxNetworks []netip.Prefix
	// VerifierURL is the operator's endpoint that checks the apps' HTTP Basic credentials for
	// a sip_user_id (<DeviceVerifier Url>); required when enabled.
	VerifierURL string
	// VerifierCache is how long a successful check is remembered (<DeviceVerifier
	// CacheSeconds>, default 300; 0 asks every time).
	VerifierCache time.Duration
	// PushWorkers is the number of concurrent pushes. Default 32.
	PushWorkers int
	// MaxWaits bounds the calls held at once. Default 10000.
	MaxWaits int
	// Retention is how long call records and app metrics are kept. Default 30 days.
	Retention time.Duration
}

// Default returns the settings used for everything a file does not set.
func Default() *Settings {
	return &Settings{
		Server: Server{Name: "sipis-1", Address: "0.0.0.0", Port: 5070},
		Sip: Sip{
			Listeners: []Listener{defaultListener()},
			UserAgent: "sipis",
			Register: Register{
				RefreshFraction:     0.9,
				Jitter:              0.1,
				DefaultExpires:      3600 * time.Second,
				MinExpires:          60 * time.Second,
				MaxExpires:          24 * time.Hour,
				BackoffMin:          5 * time.Second,
				BackoffMax:          30 * time.Minute,
				UnauthorizedRetry:   30 * time.Minute,
				MaxInFlightPerProxy: 64,
				ResumeWindow:        5 * time.Minute,
				TransactionTimeout:  32 * time.Second,
				Workers:             256,
			},
		},
		HTTPServer:    HTTPServer{Address: "0.0.0.0", Port: 5000, MaxRegistrationBytes: 65536},
		Administrator: Administrator{UserName: "admin"},
		Database:      Database{OpenString: "sipis.db"},
		Lock:          Lock{FileName: "sipis.lock"},
		Keys: Keys{
			PrivateKeyFile: "keys/server.key",
			PublicKeyFile:  "keys/server.pub",
			DataKeyFile:    "keys/data.key",
		},
		Log: Log{
			InstanceFileName: "logs/instance-{selector}.log",
			Level:            LevelWarning,
			Stdio:            StdioStdout,
			Format:           FormatText,
			Email: LogEmail{Level: LevelError,
				Summary: LogSummary{Period: 24 * time.Hour},
				Excerpt: LogExcerpt{Enabled: true, MinPeriod: 5 * time.Minute, MaxSize: 256 << 10}},
		},
		NotificationServers: NotificationServers{
			Apns: Apns{
				Endpoint:        "https://api.push.apple.com",
				SandboxEndpoint: "https://api.sandbox.push.apple.com",
			},
			Fcm: Fcm{
				Endpoint:      "https://fcm.googleapis.com",
				TokenEndpoint: "https://oauth2.googleapis.com/token",
			},
		},
		TLSServerOptions: TLSServerOptions{MinVersion: tls.VersionTLS12},
		Instance: Instance{
			MaxAge:              7 * 24 * time.Hour,
			NotRegisteredMaxAge: 12 * time.Hour,
			KeepAlive:           true,
			KeepAlivePeriod:     30 * time.Second,
			MaxCalls:            4,
			ExpiryReminders:     defaultExpiryReminders(),
		},
		IncomingCall: IncomingCall{
			NotAnsweredMaxAge:      2 * time.Minute,
			DeviceProgressMaxAge:   2 * time.Minute,
			DialogMaxAge:           12 * time.Hour,
			OnNoResponseFromDevice: Reject480,
		},
		IncomingTextMessage: IncomingTextMessage{
			MaxBytes: 4 << 20,
			Filters:  []Filter{{ContentType: "application/im-iscomposing+xml", Action: FilterDrop}},
		},
		PushTest: PushTest{MinAge: 10 * time.Second},
		Cluster:  Cluster{Lease: 9 * time.Second, Renew: 2 * time.Second, Margin: 3 * time.Second, Scan: 2 * time.Second},
		PbxHook: PbxHook{Prefix: "/api/", Wait: 4000 * time.Millisecond, ResendInterval: 1000 * time.Millisecond,
			VerifierCache: 300 * time.Second, PushWorkers: 32, MaxWaits: 10000, Retention: 30 * 24 * time.Hour},
		Probe: Probe{
			Enabled:              true,
			Interval:             30 * time.Second,
			Timeout:              5 * time.Second,
			DownAfter:            3,
			UpAfter:              2,
			MaxInFlight:          100,
			ProbeInstanceProxies: true,
			Alerts: Alerts{
				MinInterval: 5 * time.Minute,
				Smtp:        Smtp{Port: 587, StartTLS: true},
			},
		},
	}
}

func defaultListener() Listener {
	return Listener{Transport: TransportUDP, Address: "0.0.0.0", Port: 5060}
}

// ExpiryReminders are the <Instance> elements of the expiry reminders, as
// the original product writes them: an instance whose devices were silent
// for MaxAge (PremiumMaxAge for premium apps) is forgotten; before that its
// devices get silent (background) pushes every AboutToExpirePeriod/Silent
// from AboutToExpireIn/Silent before the expiry, so that a live app can
// re-register quietly, and user-visible alerts every
// AboutToExpirePeriod/Intrusive from AboutToExpireIn/Intrusive before.
// A zero AboutToExpireIn turns that series off.
type ExpiryReminders struct {
	// PremiumMaxAge is <PremiumMaxAge>: MaxAge for instances of a
	// PremiumApps app; 0 (default) means MaxAge. Never shorter than MaxAge.
	PremiumMaxAge time.Duration
	// PremiumApps are the <PremiumApp Id="…"/> app ids (bundle ids or
	// package names) whose instances are premium.
	PremiumApps []string
	// AboutToExpireIn is <AboutToExpireIn><Silent/><Intrusive/>; default
	// 24 hours and 12 hours.
	AboutToExpireIn SilentIntrusive
	// AboutToExpirePeriod is <AboutToExpirePeriod><Silent/><Intrusive/>;
	// default 1 hour and 11 hours (alerts at 12 h and 1 h before expiry).
	AboutToExpirePeriod SilentIntrusive
}

// SilentIntrusive is a pair of durations, <Silent …/> and <Intrusive …/>.
type SilentIntrusive struct {
	Silent, Intrusive time.Duration
}

func defaultExpiryReminders() ExpiryReminders {
	return ExpiryReminders{
		AboutToExpireIn:     SilentIntrusive{Silent: 24 * time.Hour, Intrusive: 12 * time.Hour},
		AboutToExpirePeriod: SilentIntrusive{Silent: time.Hour, Intrusive: 11 * time.Hour},
	}
}

// PushTexts is <PushTexts>: how the user-visible pushes read, per app.
// <App Id="*"> holds the texts for every app, <App Id="com.example.phone">
// those of one app (a kind it does not name comes from Id="*", then from
// the built-in English texts). Each kind is an element with the attributes
// of PushText: <Call>, <MissedCall>, <AnsweredElsewhere>, <Message>,
// <Test>, <Expiry>, <Off>.
type PushTexts struct {
	Apps []PushTextApp
}

// PushTextApp is one <PushTexts><App Id="…">.
type PushTextApp struct {
	ID    string // Id; "*" for every app
	Kinds map[string]PushText
}

// PushTextKinds are the element names of <PushTexts><App>, mapped to the
// push kinds of the app protocol (docs/app-protocol.md, "Push kinds and payloads").
var PushTextKinds = map[string]string{
	"Call": "call", "MissedCall": "missed-call", "AnsweredElsewhere": "answered-elsewhere",
	"Message": "message", "Test": "test", "Expiry": "expiry", "Off": "off",
}

// PushText is one kind's text. Title, Body, Badge and LocArgs may hold the
// placeholders {caller_name}, {caller_number}, {caller}, {user}, {domain},
// {selector}, {missed_calls} and {expires_in}.
type PushText struct {
	Enabled bool   // default Yes; No sends no push of this kind
	Title   string // alert title
	Body    string // alert body
	Sound   string // sound file, "default" for the system's; empty for none
	Badge   string // a number or a placeholder such as {missed_calls}
	// TitleLocKey, LocKey and LocArgs (comma-separated) are APNs's
	// title-loc-key, loc-key and loc-args, for apps that localize on the phone.
	TitleLocKey, LocKey string
	LocArgs             []string
}
