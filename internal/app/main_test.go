package app

import (
	"os"
	"testing"

	"github.com/sipis/sipis/internal/testutil/pgtest"
)

// TestMain stops the PostgreSQL server the cluster tests start (pgtest.Shared), if any.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m.Run)) }
