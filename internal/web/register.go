package web

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"
)

// Registrar takes the app's registrations (POST /sipis/register).
type Registrar interface {
	// Register takes the body of POST /sipis/register as received. An
	// error implementing StatusCoder with a 4xx code is a bad request
	// whose message is shown to the app; any other error is a 500.
	Register(ctx context.Context, body []byte) error
}

func (s *Server) registerAppRoutes(r *mux.Router) {
	r.HandleFunc("/sipis/register", s.handleRegister).Methods(http.MethodPost)
}

// handleRegister takes the app's sealed registration (docs/app-protocol.md,
// "Sealing"). The body is capped (413 beyond); the backend opens
// and applies it, and its 4xx errors are passed on with their reason.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxRegisterBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		s.error(w, r, &httpError{code: http.StatusRequestEntityTooLarge,
			msg: "registration too large: the limit is " + strconv.FormatInt(s.opts.MaxRegisterBody, 10) + " bytes"})
		return
	case err != nil:
		s.error(w, r, badRequest("cannot read the registration: %v", err))
		return
	case len(body) == 0:
		s.error(w, r, badRequest("empty registration: the body must hold the sealed registration"))
		return
	}
	if err := s.registrar.Register(r.Context(), body); err != nil {
		s.error(w, r, err)
		return
	}
	writeDoc(w, "text/plain", []byte("OK\n"))
}

func itoa(n int) string { return strconv.Itoa(n) }
