package hook

import (
	"errors"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/store"
)

// platformOf maps the API's platform names to internal/push's: vialer's "gcm" and "android"
// are FCM today.
func platformOf(name string) string {
	switch name {
	case "apns":
		return push.PlatformAPNs
	case "gcm", "android", "fcm":
		return push.PlatformFCM
	case "webhook":
		return push.PlatformWebhook
	}
	return ""
}

// handleDevice is POST (register or update) and DELETE {platform}-device/.
func (h *Hook) handleDevice(w http.ResponseWriter, r *http.Request) {
	platform := platformOf(mux.Vars(r)["platform"])
	p, err := readParams(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	d := store.HookDevice{Platform: platform}
	if d.SipUserID, err = p.sipUserID(); err == nil {
		if d.Token, err = p.word("token", true, 4096); err == nil {
			d.App, err = p.word("app", true, maxText)
		}
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := h.authorize(r, d.SipUserID); err != nil {
		h.writeError(w, r, err)
		return
	}
	log := h.log.WithFields(logrus.Fields{"sip_user_id": d.SipUserID, "platform": platform, "app": d.App,
		"token": push.ShortToken(d.Token)})
	if r.Method == http.MethodDelete {
		switch err := h.opts.Store.DeleteHookDevice(r.Context(), d.SipUserID, d.App, d.Token); {
		case errors.Is(err, store.ErrNotFound):
			writeText(w, http.StatusNotFound, "no such device\n")
		case err != nil:
			h.writeError(w, r, err)
		default:
			log.Info("PBX-hook device removed")
			writeText(w, http.StatusOK, "")
		}
		return
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"name", &d.Name}, {"os_version", &d.OSVersion}, {"client_version", &d.ClientVersion},
		{"remote_logging_id", &d.RemoteLoggingID}} {
		if *f.dst, err = p.text(f.name, false, maxText); err != nil {
			h.writeError(w, r, err)
			return
		}
	}
	if d.Sandbox, err = p.boolean("sandbox", false); err != nil {
		h.writeError(w, r, err)
		return
	}
	created, err := h.opts.Store.PutHookDevice(r.Context(), &d)
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			h.writeError(w, r, bad("%s", err.Error()))
			return
		}
		h.writeError(w, r, err)
		return
	}
	if created {
		log.Info("PBX-hook device registered")
		writeText(w, http.StatusCreated, "")
		return
	}
	log.Debug("PBX-hook device updated")
	writeText(w, http.StatusOK, "")
}

// handleCheckIn is POST check-in/: sip_user_id and, optionally, the device's token; it
// updates the last-seen time of the account's devices (or of that one).
func (h *Hook) handleCheckIn(w http.ResponseWriter, r *http.Request) {
	p, err := readParams(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	user, err := p.sipUserID()
	var token string
	if err == nil {
		token, err = p.word("token", false, 4096)
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := h.authorize(r, user); err != nil {
		h.writeError(w, r, err)
		return
	}
	switch _, err := h.opts.Store.CheckInHookDevices(r.Context(), user, token); {
	case errors.Is(err, store.ErrNotFound):
		writeText(w, http.StatusNotFound, "no such device\n")
	case err != nil:
		h.writeError(w, r, err)
	default:
		writeText(w, http.StatusOK, "")
	}
}

// handleHangupReason is POST hangup-reason/: why the app did not take the call of unique_key.
func (h *Hook) handleHangupReason(w http.ResponseWriter, r *http.Request) {
	p, err := readParams(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	user, err := p.sipUserID()
	var key, reason string
	if err == nil {
		if key, err = p.word("unique_key", true, maxText); err == nil {
			reason, err = p.text("reason", true, maxText)
		}
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := h.authorize(r, user); err != nil {
		h.writeError(w, r, err)
		return
	}
	switch err := h.opts.Store.SetHookHangupReason(r.Context(), user, keyHash(key), reason); {
	case errors.Is(err, store.ErrNotFound):
		writeText(w, http.StatusNotFound, "no such call\n")
	case err != nil:
		h.writeError(w, r, err)
	default:
		h.log.WithFields(logrus.Fields{"sip_user_id": user, "reason": reason}).Info("PBX-hook hangup reason")
		writeText(w, http.StatusOK, "")
	}
}

// handleLogMetrics is POST log-metrics/: the app's report on one call setup, with vialer's
// field names (sip_user_id, os, app_version, network, direction, call_setup_successful,
// failed_reason) and time_to_initial_response in milliseconds.
func (h *Hook) handleLogMetrics(w http.ResponseWriter, r *http.Request) {
	p, err := readParams(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	m := store.HookMetric{ReceivedAt: time.Now()}
	if m.SipUserID, err = p.sipUserID(); err != nil {
		h.writeError(w, r, err)
		return
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"os", &m.OS}, {"app_version", &m.AppVersion}, {"network", &m.Network}, {"direction", &m.Direction},
		{"failed_reason", &m.FailedReason}} {
		if *f.dst, err = p.text(f.name, false, maxText); err != nil {
			h.writeError(w, r, err)
			return
		}
	}
	if m.SetupResult, err = p.word("call_setup_successful", false, 16); err != nil {
		h.writeError(w, r, err)
		return
	}
	switch m.SetupResult {
	case "", "true", "false", "declined":
	default:
		h.writeError(w, r, bad("call_setup_successful: must be true, false or declined"))
		return
	}
	ms, ok, err := p.number("time_to_initial_response", false)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if ok {
		if ms < 0 || ms > float64(time.Hour/time.Millisecond) {
			h.writeError(w, r, bad("time_to_initial_response: must be 0 to 3600000 milliseconds"))
			return
		}
		m.FirstResponse = time.Duration(ms * float64(time.Millisecond))
	}
	if err := h.authorize(r, m.SipUserID); err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := h.opts.Store.AddHookMetric(r.Context(), &m); err != nil {
		h.writeError(w, r, err)
		return
	}
	writeText(w, http.StatusOK, "")
}
