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
	d := store.HookDevice{Platform: platform}
	var f *fields
	if !h.readAuthorized(w, r, func(rf *fields) string {
		f = rf
		d.SipUserID, d.Token, d.App = f.sipUserID(), f.word("token", true, 4096), f.word("app", true, maxText)
		return d.SipUserID
	}) {
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
	d.Name, d.OSVersion = f.text("name", false, maxText), f.text("os_version", false, maxText)
	d.ClientVersion, d.RemoteLoggingID = f.text("client_version", false, maxText), f.text("remote_logging_id", false, maxText)
	d.Sandbox = f.boolean("sandbox", false)
	if f.err != nil {
		h.writeError(w, r, f.err)
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
	var user, token string
	if !h.readAuthorized(w, r, func(f *fields) string {
		user, token = f.sipUserID(), f.word("token", false, 4096)
		return user
	}) {
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
	var user, key, reason string
	if !h.readAuthorized(w, r, func(f *fields) string {
		user, key, reason = f.sipUserID(), f.word("unique_key", true, maxText), f.text("reason", true, maxText)
		return user
	}) {
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
	m := store.HookMetric{ReceivedAt: time.Now()}
	if !h.readAuthorized(w, r, func(f *fields) string {
		m.SipUserID = f.sipUserID()
		m.OS, m.AppVersion = f.text("os", false, maxText), f.text("app_version", false, maxText)
		m.Network, m.Direction = f.text("network", false, maxText), f.text("direction", false, maxText)
		m.FailedReason = f.text("failed_reason", false, maxText)
		switch m.SetupResult = f.word("call_setup_successful", false, 16); m.SetupResult {
		case "", "true", "false", "declined":
		default:
			f.check(bad("call_setup_successful: must be true, false or declined"))
		}
		if ms, ok := f.number("time_to_initial_response", false); ok {
			if ms < 0 || ms > float64(time.Hour/time.Millisecond) {
				f.check(bad("time_to_initial_response: must be 0 to 3600000 milliseconds"))
			}
			m.FirstResponse = time.Duration(ms * float64(time.Millisecond))
		}
		return m.SipUserID
	}) {
		return
	}
	if err := h.opts.Store.AddHookMetric(r.Context(), &m); err != nil {
		h.writeError(w, r, err)
		return
	}
	writeText(w, http.StatusOK, "")
}
