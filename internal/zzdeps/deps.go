package zzdeps

import (
	_ "github.com/chromedp/chromedp"
	_ "github.com/emersion/go-smtp"
	_ "github.com/emiago/sipgo"
	_ "github.com/emiago/sipgo/sip"
	_ "github.com/gorilla/mux"
	_ "github.com/mattn/go-sqlite3"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/sirupsen/logrus"
	_ "github.com/wneessen/go-mail"
	_ "golang.org/x/crypto/bcrypt"
	_ "golang.org/x/crypto/chacha20poly1305"
	_ "golang.org/x/crypto/nacl/box"
	_ "golang.org/x/net/http2"
	_ "golang.org/x/oauth2"
	_ "golang.org/x/oauth2/google"
)
