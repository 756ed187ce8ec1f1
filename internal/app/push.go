package app

import (
	"context"

	"github.com/sipis/sipis/internal/web"
)

// testPush sends a test push to every device of an instance. Push providers are wired in
// with the calls work; until then every device's outcome says so, and nothing is counted.
func (a *App) testPush(ctx context.Context, sel string) ([]web.PushResult, error) {
	devs, err := a.db.Devices(ctx, sel)
	if err != nil {
		return nil, err
	}
	var out []web.PushResult
	for _, d := range devs {
		out = append(out, web.PushResult{Device: d.ID, Platform: d.Platform, Outcome: "Failed", Error: "no push provider configured"})
	}
	return out, nil
}
