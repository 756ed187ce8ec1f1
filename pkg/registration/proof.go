package registration

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// CallProof is what a woken device sends in the X-Sipis-Proof header of the REGISTER with
// which it takes a call: the lowercase hex HMAC-SHA256, keyed with the device's secret (the
// device's "secret" of its registration), of "sipis call proof", a zero byte, the device id,
// a zero byte and the call's one-time token. It proves the secret without sending it, and
// is bound to that device and that call, so a proof seen on the wire is worth nothing for
// another call or device.
func CallProof(secret, deviceID, token string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("sipis call proof\x00" + deviceID + "\x00" + token))
	return hex.EncodeToString(mac.Sum(nil))
}
