package push

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Alert is the user-visible part of a notification: on APNs the "alert",
// "sound" and "badge" of the aps dictionary, on FCM and webhook the fields
// title, body, sound and badge of the data.
type Alert struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
	// Sound is the sound file name, "default" for the system's, "" for none.
	Sound string `json:"sound,omitempty"`
	// Badge is the app icon's badge number; nil leaves the badge alone.
	Badge *int `json:"badge,omitempty"`
	// TitleLocKey, LocKey and LocArgs let an iOS app localize the text on
	// the phone (APNs title-loc-key, loc-key, loc-args); Title and Body are
	// then the fallback shown by apps without the key.
	TitleLocKey string   `json:"title_loc_key,omitempty"`
	LocKey      string   `json:"loc_key,omitempty"`
	LocArgs     []string `json:"loc_args,omitempty"`
}

// Text is how one kind of push reads, as configured per app: Title and Body
// may hold placeholders (see [Placeholders]), Badge is a number or a
// placeholder, LocArgs are placeholders or text.
type Text struct {
	Title, Body, Sound, Badge string
	TitleLocKey, LocKey       string
	LocArgs                   []string
	// Off sends no push of this kind at all (for example no missed-call
	// alert).
	Off bool
}

// Placeholders are the names that a Text may hold in braces; they are
// those the original product gives its per-app push formatters.
var Placeholders = []string{"caller_name", "caller_number", "caller", "user", "domain", "selector", "missed_calls", "expires_in"}

// TextSet is the texts of every user-visible kind for one app (AppID).
type TextSet map[Kind]Text

// Texts is the operator's push texts: per AppID, with Default for every
// other app. A kind missing from an app's set is taken from Default, then
// from [DefaultTexts].
type Texts struct {
	Default TextSet
	PerApp  map[string]TextSet
}

// DefaultTexts is how pushes read when the settings say nothing.
func DefaultTexts() TextSet {
	return TextSet{
		KindCall:              {Title: "Incoming call", Body: "{caller}", LocKey: "SIPIS_CALL", LocArgs: []string{"{caller}"}},
		KindMissedCall:        {Title: "Missed call", Body: "Missed call from {caller}", Sound: "default", Badge: "{missed_calls}", LocKey: "SIPIS_MISSED_CALL", LocArgs: []string{"{caller}", "{missed_calls}"}},
		KindAnsweredElsewhere: {Title: "Answered elsewhere", Body: "The call from {caller} was answered on another device", LocKey: "SIPIS_ANSWERED_ELSEWHERE", LocArgs: []string{"{caller}"}},
		KindMessage:           {Title: "{caller}", Body: "New message from {caller}", Sound: "default", LocKey: "SIPIS_MESSAGE", LocArgs: []string{"{caller}"}},
		KindTest:              {Title: "Test notification", Body: "Push notifications work for {user}@{domain}", Sound: "default", LocKey: "SIPIS_TEST", LocArgs: []string{"{user}", "{domain}"}},
		KindExpiry:            {Title: "Open the app to keep receiving calls", Body: "{user}@{domain} stops receiving calls in {expires_in} unless you open the app", Sound: "default", LocKey: "SIPIS_EXPIRY", LocArgs: []string{"{user}", "{domain}", "{expires_in}"}},
		KindOff:               {Title: "Calls turned off", Body: "{user}@{domain} no longer receives calls in the background. Open the app to turn them on again", Sound: "default", LocKey: "SIPIS_OFF", LocArgs: []string{"{user}", "{domain}"}},
	}
}

// Validate checks every text's placeholders and badge; the error names the
// app and kind.
func (t Texts) Validate() error {
	check := func(app string, set TextSet) error {
		for k, x := range set {
			if !k.Valid() {
				return fmt.Errorf("push texts of %s: unknown kind %q", app, k)
			}
			for _, s := range append([]string{x.Title, x.Body, x.Badge}, x.LocArgs...) {
				if err := checkPlaceholders(s); err != nil {
					return fmt.Errorf("push texts of %s, %s: %w", app, k, err)
				}
			}
			if b := x.Badge; b != "" && !strings.HasPrefix(b, "{") {
				if n, err := strconv.Atoi(b); err != nil || n < 0 {
					return fmt.Errorf("push texts of %s, %s: badge %q is neither a number nor a placeholder", app, k, b)
				}
			}
		}
		return nil
	}
	if err := check("the default app", t.Default); err != nil {
		return err
	}
	for app, set := range t.PerApp {
		if err := check("app "+strconv.Quote(app), set); err != nil {
			return err
		}
	}
	return nil
}

func checkPlaceholders(s string) error {
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			return nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return fmt.Errorf("unclosed placeholder in %q", s)
		}
		name := s[i+1 : i+j]
		ok := false
		for _, p := range Placeholders {
			ok = ok || p == name
		}
		if !ok {
			return fmt.Errorf("unknown placeholder {%s} (known: %s)", name, strings.Join(Placeholders, ", "))
		}
		s = s[i+j+1:]
	}
}

// text returns the Text for n: the app's, else the default set's, else the
// built-in one.
func (t *Texts) text(n *Notification) Text {
	if t != nil {
		if x, ok := t.PerApp[n.Device.AppID][n.Kind]; ok {
			return x
		}
		if x, ok := t.Default[n.Kind]; ok {
			return x
		}
	}
	return DefaultTexts()[n.Kind]
}

// Off reports whether the operator turned pushes of n's kind off for n's
// app.
func (t *Texts) Off(n *Notification) bool { return t.text(n).Off }

// Render fills the placeholders of n's text and returns the alert.
func (t *Texts) Render(n *Notification) *Alert {
	x := t.text(n)
	r := strings.NewReplacer(placeholderPairs(n)...)
	a := &Alert{
		Title: r.Replace(x.Title), Body: r.Replace(x.Body), Sound: x.Sound,
		TitleLocKey: x.TitleLocKey, LocKey: x.LocKey,
	}
	for _, arg := range x.LocArgs {
		a.LocArgs = append(a.LocArgs, r.Replace(arg))
	}
	if b := strings.TrimSpace(r.Replace(x.Badge)); b != "" {
		if v, err := strconv.Atoi(b); err == nil && v >= 0 {
			a.Badge = &v
		}
	}
	return a
}

// placeholderPairs returns the old/new pairs for a strings.Replacer.
func placeholderPairs(n *Notification) []string {
	number := n.CallerURI
	if _, rest, ok := strings.Cut(number, ":"); ok {
		number = rest
	}
	number, _, _ = strings.Cut(number, "@")
	number, _, _ = strings.Cut(number, ";")
	caller := n.CallerName
	if caller == "" {
		caller = number
	}
	if caller == "" {
		caller = "unknown caller"
	}
	missed := ""
	if n.MissedCalls > 0 {
		missed = strconv.Itoa(n.MissedCalls)
	}
	expiresIn := ""
	if !n.ExpiresAt.IsZero() && !n.SentAt.IsZero() {
		expiresIn = humanDuration(n.ExpiresAt.Sub(n.SentAt))
	}
	return []string{
		"{caller_name}", n.CallerName, "{caller_number}", number, "{caller}", caller,
		"{user}", n.User, "{domain}", n.Domain, "{selector}", n.Selector,
		"{missed_calls}", missed, "{expires_in}", expiresIn,
	}
}

// humanDuration writes d for a person: "12 hours", "1 hour", "45 minutes".
func humanDuration(d time.Duration) string {
	switch {
	case d >= 2*time.Hour:
		return strconv.Itoa(int((d+30*time.Minute)/time.Hour)) + " hours"
	case d >= time.Hour-30*time.Second:
		return "1 hour"
	case d > 90*time.Second:
		return strconv.Itoa(int((d+30*time.Second)/time.Minute)) + " minutes"
	default:
		return "a minute"
	}
}
