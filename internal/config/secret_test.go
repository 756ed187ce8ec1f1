package config

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"
)

const secretValue = "hunter2-very-secret"

func TestSecretNeverPrints(t *testing.T) {
	s := NewSecret(secretValue)
	if s.Value() != secretValue || s.IsEmpty() {
		t.Fatal("Value lost the secret")
	}
	type holder struct {
		XMLName  xml.Name `xml:"Holder"`
		Password Secret   `xml:"Password,attr"`
		Key      Secret   `xml:"Key"`
		Ptr      *Secret
	}
	h := holder{Password: s, Key: s, Ptr: &s}
	var outs []string
	for _, verb := range []string{"%v", "%s", "%+v", "%#v", "%q", "%x", "%X", "%d", "%T"} {
		outs = append(outs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h))
	}
	outs = append(outs, fmt.Sprint(s), fmt.Sprintln(s, h), s.String(), s.GoString())
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	x, err := xml.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j), string(x))
	for _, f := range []logrus.Formatter{&logrus.TextFormatter{DisableColors: true}, &logrus.JSONFormatter{}} {
		var buf bytes.Buffer
		log := logrus.New()
		log.SetOutput(&buf)
		log.SetFormatter(f)
		log.WithField("password", s).WithField("admin", Administrator{UserName: "a", Password: s}).Warn("x")
		outs = append(outs, buf.String())
	}
	for _, o := range outs {
		if strings.Contains(o, secretValue) || strings.Contains(o, fmt.Sprintf("%x", secretValue)) {
			t.Errorf("secret leaked: %s", o)
		}
	}
	if got := fmt.Sprintf("%v|%s|%q", s, NewSecret(""), s); got != `Not Empty|Empty|"Not Empty"` {
		t.Errorf("rendering = %s", got)
	}
	if !strings.Contains(string(j), `"Password":"Not Empty"`) || !strings.Contains(string(x), `Password="Not Empty"`) {
		t.Errorf("json %s / xml %s do not say Not Empty", j, x)
	}
}

func TestLoadedSettingsDoNotPrintSecrets(t *testing.T) {
	s, err := Load("testdata/good.xml")
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s), string(j)} {
		for _, secret := range []string{"admin-secret", "TESTKEY", "service_account", "push-hook-secret", "smtp-secret", "hook-secret", "inline-data-key"} {
			if strings.Contains(out, secret) {
				t.Errorf("settings print %q", secret)
			}
		}
	}
}

func TestCheckPasswordBcrypt(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		h := prefix + string(hash[4:])
		a := Administrator{UserName: "admin", Password: NewSecret(h)}
		if !a.CheckPassword("admin", "pw") {
			t.Errorf("%s: right password refused", prefix)
		}
		if a.CheckPassword("admin", "wrong") || a.CheckPassword("root", "pw") || a.CheckPassword("admin", h) {
			t.Errorf("%s: wrong credentials accepted", prefix)
		}
	}
	plain := Administrator{UserName: "admin", Password: NewSecret("pw")}
	if !plain.CheckPassword("admin", "pw") || plain.CheckPassword("admin", "pw ") || plain.CheckPassword("", "") {
		t.Error("plain password check")
	}
	if (Administrator{UserName: "admin"}).CheckPassword("admin", "") {
		t.Error("empty password must refuse everyone")
	}
}
